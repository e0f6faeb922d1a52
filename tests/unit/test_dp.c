/* Data-parallel distill's pure parts (stages/dp.h): the settings' checks, which sequences of a step
 * each rank takes, the NCCL id file (written atomically, read back, waited for with a deadline,
 * refused when it is garbage, truncated, damaged, for another dp_size or an earlier run's), and
 * the hash the ranks compare their weights with. */
#define _XOPEN_SOURCE 700
#include "stages/dp.h"
#include "test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static void write_text(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(text, 1, len, f) == len);
    fclose(f);
}

static void test_plan(void) {
    xd_err e = {{0}};
    dp_plan p;
    /* off: the defaults, and align's zeroed settings */
    CHECK(dp_plan_make(1, -1, "", 8, 0, &p, &e) == 0 && !p.on && p.per_rank == 8 && p.first == 0);
    CHECK(dp_plan_make(0, -1, NULL, 8, 0, &p, &e) == 0 && !p.on && p.size == 1);
    /* on: dp_size > 1 with a rank, or a dp_id (one rank: rank 0 without --dp-rank) */
    CHECK(dp_plan_make(4, 2, "", 8, 0, &p, &e) == 0 && p.on && p.size == 4 && p.rank == 2 && p.per_rank == 2 &&
          p.first == 4);
    CHECK(dp_plan_make(1, -1, "/tmp/id", 8, 4, &p, &e) == 0 && p.on && p.size == 1 && p.rank == 0 &&
          p.per_rank == 8 && p.first == 0);
    CHECK(dp_plan_make(1, 0, "/tmp/id", 8, 0, &p, &e) == 0 && p.on && p.rank == 0);
    CHECK(dp_plan_make(2, 1, "", 8, 2, &p, &e) == 0 && p.per_rank == 4 && p.first == 4);
    CHECK_ERR_CONTAINS(dp_plan_make(1, 0, "", 8, 0, &p, &e), e, "--dp-rank 0 (dp_rank) needs data parallelism");
    CHECK_ERR_CONTAINS(dp_plan_make(4, -1, "", 8, 0, &p, &e), e, "dp_size 4: every rank needs its --dp-rank R");
    CHECK_ERR_CONTAINS(dp_plan_make(4, 4, "", 8, 0, &p, &e), e, "--dp-rank 4 (dp_rank) is outside 0 .. 3 (dp_size 4)");
    CHECK_ERR_CONTAINS(dp_plan_make(1, 1, "/tmp/id", 8, 0, &p, &e), e, "outside 0 .. 0");
    CHECK_ERR_CONTAINS(dp_plan_make(3, 0, "", 8, 0, &p, &e), e, "batch 8 is not divisible by dp_size 3");
    CHECK_ERR_CONTAINS(dp_plan_make(2, 0, "", 8, 3, &p, &e), e,
                       "micro_batch 3 does not divide a rank's share of the batch, 4 sequences (batch 8 / dp_size 2)");
}

/* every sequence of a step is taken by exactly one rank, in rank order, each rank a block */
static void test_share(void) {
    const long batches[] = {1, 2, 6, 8, 64};
    const int sizes[] = {1, 2, 3, 4, 8};
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            long batch = batches[bi];
            int size = sizes[si];
            if (batch % size) continue;
            int taken[64] = {0};
            long next = 0;
            for (int r = 0; r < size; r++) {
                long first, count;
                dp_share(batch, size, r, &first, &count);
                CHECK_MSG(first == next && count == batch / size, "batch %ld size %d rank %d: %ld +%ld", batch, size,
                          r, first, count);
                for (long i = first; i < first + count && i < 64; i++) taken[i]++;
                next = first + count;
            }
            CHECK(next == batch);
            for (long i = 0; i < batch; i++) CHECK_MSG(taken[i] == 1, "batch %ld size %d: sequence %ld", batch, size, i);
        }
}

static int count_entries(const char *d) {
    DIR *dd = opendir(d);
    int n = 0;
    struct dirent *de;
    while (dd && (de = readdir(dd)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    if (dd) closedir(dd);
    return n;
}

static void test_id_file(void) {
    xd_err e = {{0}};
    char path[400], sub[300];
    snprintf(sub, sizeof sub, "%s/rt", dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/dp-id", sub);
    unsigned char id[DP_ID_BYTES], back[DP_ID_BYTES];
    for (int i = 0; i < DP_ID_BYTES; i++) id[i] = (unsigned char)(i * 37 + 11);
    CHECK(dp_id_write(path, id, 4, &e) == 0);
    CHECK_MSG(count_entries(sub) == 1, "the temporary file was renamed away: %d entries", count_entries(sub));
    char *text;
    size_t len;
    CHECK(xd_read_file(path, 4096, &text, &len, &e) == 0);
    CHECK(len == strlen("xdistill-dp-id 1\ndp_size 4\nnccl_id \n") + 2 * DP_ID_BYTES);
    memset(back, 0, sizeof back);
    CHECK(dp_id_parse(path, text, len, 4, back, &e) == 0 && !memcmp(id, back, DP_ID_BYTES));
    /* an older run's time stamp does not matter to the reader when not_before allows it */
    CHECK(dp_id_wait(path, 1, 4, 1.0, 0, back, &e) == 0 && !memcmp(id, back, DP_ID_BYTES));

    /* another dp_size */
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, len, 2, back, &e), e,
                       "written by rank 0 of a run with dp_size 4, this rank has dp_size 2");
    /* truncated: inside the magic line, after it, inside the id, without the last newline */
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, 0, 4, back, &e), e, "truncated data-parallel id file (0 bytes)");
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, 9, 4, back, &e), e, "truncated data-parallel id file (9 bytes)");
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, 17, 4, back, &e), e, "no \"dp_size N\" line");
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, 30, 4, back, &e), e, "no \"nccl_id\" line");
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, len - 100, 4, back, &e), e, "the NCCL id has 157 hex digits, not 256");
    CHECK_ERR_CONTAINS(dp_id_parse(path, text, len - 1, 4, back, &e), e, "no final newline");
    /* damaged: a digit that is no hex, something after the id */
    char bad[600];
    memcpy(bad, text, len);
    bad[len - 5] = 'g';
    CHECK_ERR_CONTAINS(dp_id_parse(path, bad, len, 4, back, &e), e, "is not hex");
    memcpy(bad, text, len);
    memcpy(bad + len, "junk\n", 5);
    CHECK_ERR_CONTAINS(dp_id_parse(path, bad, len + 5, 4, back, &e), e, "something follows the NCCL id");
    /* garbage: another file altogether */
    const char *garbage = "{\"stage\": \"distill\"}\n";
    CHECK_ERR_CONTAINS(dp_id_parse(path, garbage, strlen(garbage), 4, back, &e), e,
                       "not a data-parallel id file (it should start with \"xdistill-dp-id 1\")");
    unsigned char bin[300];
    for (size_t i = 0; i < sizeof bin; i++) bin[i] = (unsigned char)(i * 101);
    CHECK_ERR_CONTAINS(dp_id_parse(path, (const char *)bin, sizeof bin, 4, back, &e), e, "not a data-parallel id file");
    free(text);

    /* the waiting rank reads a garbage or truncated file as such, at once */
    write_text(path, garbage, strlen(garbage));
    double t0 = xd_now();
    CHECK_ERR_CONTAINS(dp_id_wait(path, 1, 4, 5.0, 0, back, &e), e, "not a data-parallel id file");
    CHECK(xd_now() - t0 < 1.0);
    write_text(path, "xdistill-dp-id 1\ndp_size 4\nnccl_id 0a1b", 40);
    CHECK_ERR_CONTAINS(dp_id_wait(path, 1, 4, 5.0, 0, back, &e), e, "truncated or damaged");
}

static void test_wait(void) {
    xd_err e = {{0}};
    unsigned char id[DP_ID_BYTES], back[DP_ID_BYTES];
    for (int i = 0; i < DP_ID_BYTES; i++) id[i] = (unsigned char)(255 - i);
    char path[400];
    /* nobody writes it: the deadline, naming the file */
    snprintf(path, sizeof path, "%s/none/dp-id", dir);
    double t0 = xd_now();
    CHECK_ERR_CONTAINS(dp_id_wait(path, 2, 4, 0.3, 0, back, &e), e, "rank 2 of 4: rank 0 did not write the NCCL id to");
    CHECK(strstr(e.msg, path) != NULL && strstr(e.msg, "within 0.3 s") != NULL);
    double waited = xd_now() - t0;
    CHECK_MSG(waited >= 0.29 && waited < 2.0, "waited %.3f s", waited);

    /* an earlier run's file (older than not_before) is waited past, and said so */
    snprintf(path, sizeof path, "%s/stale-id", dir);
    CHECK(dp_id_write(path, id, 4, &e) == 0);
    struct timeval old[2] = {{time(NULL) - 1000, 0}, {time(NULL) - 1000, 0}};
    CHECK(utimes(path, old) == 0);
    CHECK_ERR_CONTAINS(dp_id_wait(path, 1, 4, 0.3, time(NULL) - 10, back, &e), e, "the file there is an earlier run's");

    /* rank 0 writes it while the other waits: the waiter gets the id */
    snprintf(path, sizeof path, "%s/late-id", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec ts = {0, 300000000L};
        nanosleep(&ts, NULL);
        xd_err ce = {{0}};
        _exit(dp_id_write(path, id, 4, &ce) == 0 ? 0 : 1);
    }
    memset(back, 0, sizeof back);
    t0 = xd_now();
    CHECK(dp_id_wait(path, 3, 4, 10.0, time(NULL) - 10, back, &e) == 0);
    CHECK(!memcmp(id, back, DP_ID_BYTES));
    CHECK_MSG(xd_now() - t0 >= 0.25, "returned before the file was written");
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* a file in a directory that does not exist cannot be written: said so */
    snprintf(path, sizeof path, "%s/none/dp-id", dir);
    CHECK_ERR_CONTAINS(dp_id_write(path, id, 1, &e), e, "the data-parallel id file");
}

static void test_hash(void) {
    float a[1001], b[1001];
    for (int i = 0; i < 1001; i++) a[i] = b[i] = (float)i * 0.37f - 50.0f;
    uint64_t h = dp_hash(a, sizeof a, 0);
    CHECK(h == dp_hash(b, sizeof b, 0));
    /* one bit anywhere, or a length, changes it */
    for (int i = 0; i < 1001; i += 100) {
        uint32_t w;
        memcpy(&w, &b[i], 4);
        w ^= 1u << (i % 32);
        memcpy(&b[i], &w, 4);
        CHECK_MSG(dp_hash(b, sizeof b, 0) != h, "flip at %d", i);
        memcpy(&b[i], &a[i], 4);
    }
    CHECK(dp_hash(a, sizeof a - 1, 0) != h);
    CHECK(dp_hash(a, sizeof a, 1) != h);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/test_dp.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_plan();
    test_share();
    test_id_file();
    test_wait();
    test_hash();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
