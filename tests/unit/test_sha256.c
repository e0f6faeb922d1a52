/* SHA-256 against the FIPS 180-4 / NIST example vectors, in one call and fed in odd pieces. */
#include "common/xd.h"
#include "test.h"

static void check_vector(const char *msg, size_t len, const char *want) {
    char hex[65];
    xd_sha256_hex(msg, len, hex);
    CHECK_MSG(!strcmp(hex, want), "sha256 of %zu bytes: %s, want %s", len, hex, want);
    /* the same digest when fed 1, 3, 7, ... bytes at a time across block boundaries */
    for (size_t step = 1; step < 80; step += 6) {
        xd_sha256_ctx c;
        uint8_t d[32];
        xd_sha256_init(&c);
        for (size_t i = 0; i < len; i += step) xd_sha256_update(&c, msg + i, len - i < step ? len - i : step);
        xd_sha256_final(&c, d);
        xd_hex(d, 32, hex);
        CHECK_MSG(!strcmp(hex, want), "sha256 of %zu bytes in steps of %zu: %s", len, step, hex);
    }
}

int main(void) {
    check_vector("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check_vector("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_vector(m448, strlen(m448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_vector(m896, strlen(m896), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* one million 'a' */
    size_t n = 1000000;
    char *a = malloc(n);
    CHECK(a != NULL);
    if (a) {
        memset(a, 'a', n);
        check_vector(a, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        free(a);
    }
    /* lengths around the padding boundary (55, 56, 63, 64 bytes) */
    check_vector("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 55,
                 "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    check_vector("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 56,
                 "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    TEST_MAIN_END();
}
