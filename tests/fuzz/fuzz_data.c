/* Fuzzes the token-shard manifest reader and the loader-state decoders. The first byte picks the
 * target: 0 the state's byte form, 1 its JSON form (both must round-trip what they accept), 2 a
 * manifest.json beside a fixed valid shard (open, verify and a few loader draws must not crash). */
#include "model/data.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[] = "/tmp/xd_fuzz_data_XXXXXX";
static char fuzz_manifest[256], fuzz_shard[256];

static void fuzz_cleanup(void) {
    unlink(fuzz_manifest);
    unlink(fuzz_shard);
    rmdir(fuzz_dir);
}

/* The shard the seed manifests name: 20 ids 0..19, vocabulary 50 (tests/fuzz/corpus/fuzz_data). */
static int fuzz_setup(void) {
    if (fuzz_manifest[0]) return 0;
    if (!mkdtemp(fuzz_dir)) return -1;
    snprintf(fuzz_manifest, sizeof fuzz_manifest, "%s/manifest.json", fuzz_dir);
    snprintf(fuzz_shard, sizeof fuzz_shard, "%s/train-00000.bin", fuzz_dir);
    uint8_t b[64 + 40] = "XDTOKSH1";
    b[8] = 1;
    b[12] = 2;
    b[16] = 20;
    b[24] = 50;
    for (int i = 0; i < 20; i++) b[64 + 2 * i] = (uint8_t)i;
    FILE *f = fopen(fuzz_shard, "wb");
    if (!f || fwrite(b, 1, sizeof b, f) != sizeof b || fclose(f)) return -1;
    atexit(fuzz_cleanup);
    return 0;
}

static void fuzz_manifest_case(const uint8_t *data, size_t size) {
    FILE *f = fopen(fuzz_manifest, "wb");
    if (!f) __builtin_trap();
    fwrite(data, 1, size, f);
    fclose(f);
    model_data_dir d;
    xd_err e;
    if (model_data_open(fuzz_dir, &d, &e) != 0) {
        if (!strstr(e.msg, fuzz_dir)) __builtin_trap(); /* errors name the file */
        return;
    }
    (void)model_data_verify(&d, &e);
    model_data_close(&d);
    for (int split = 0; split < 2; split++) {
        model_data_source src = {fuzz_dir, 1.0};
        model_data_loader *l;
        if (model_data_loader_open(&src, 1, (model_data_split)split, 3, 1, &l, &e) != 0) continue;
        int in[3], tg[3];
        for (int i = 0; i < 20 && model_data_next(l, in, tg, NULL, &e) == 0; i++)
            for (int t = 0; t < 3; t++)
                if (in[t] < 0 || in[t] >= 50 || tg[t] < -1 || tg[t] >= 50) __builtin_trap();
        model_data_loader_free(l);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || fuzz_setup() != 0) return 0;
    xd_err e;
    model_data_state s, s2;
    if (data[0] == 0) {
        if (model_data_state_decode(data + 1, size - 1, &s, &e) != 0) return 0;
        uint8_t buf[4096];
        if (model_data_state_encode(&s, buf, sizeof buf, &e) != 0 ||
            memcmp(buf, data + 1, size - 1) != 0)
            __builtin_trap();
    } else if (data[0] == 1) {
        json_t *j = json_loadb((const char *)data + 1, size - 1, 0, NULL);
        if (j && model_data_state_from_json(j, &s, &e) == 0) {
            json_t *again = model_data_state_to_json(&s);
            if (!again || model_data_state_from_json(again, &s2, &e) != 0 || memcmp(&s, &s2, sizeof s))
                __builtin_trap();
            json_decref(again);
        }
        json_decref(j);
    } else if (data[0] == 2) {
        fuzz_manifest_case(data + 1, size - 1);
    }
    return 0;
}
