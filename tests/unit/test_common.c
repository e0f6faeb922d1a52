#include "common/xd.h"
#include "test.h"

#include <unistd.h>

static void test_half_conversions(void) {
    const float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        CHECK_NEAR(xd_f16_to_f32(xd_f32_to_f16(vals[i])), vals[i], 0.0);
        CHECK_NEAR(xd_bf16_to_f32(xd_f32_to_bf16(vals[i])), vals[i], fabs(vals[i]) / 128.0);
    }
    CHECK(xd_f32_to_f16(1e6f) == 0x7c00);      /* overflow becomes inf */
    CHECK(xd_f32_to_bf16(1.00390625f) == 0x3f80); /* ties round to even */
    CHECK(xd_f16_to_f32(0x3c00) == 1.0f);
}

static void test_atomic_write_and_read(void) {
    char dir[] = "/tmp/xd_test_common_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512];
    xd_err e;
    CHECK(xd_path_join(path, sizeof path, dir, "f.txt", &e) == 0);
    CHECK(xd_write_file_atomic(path, "hello", 5, &e) == 0);
    char *buf;
    size_t n;
    CHECK(xd_read_file(path, 100, &buf, &n, &e) == 0);
    CHECK(n == 5 && strcmp(buf, "hello") == 0);
    free(buf);
    int rc = xd_read_file(path, 3, &buf, &n, &e);
    CHECK_ERR_CONTAINS(rc, e, "more than the 3 allowed");
    rc = xd_read_file("/nonexistent/x", 3, &buf, &n, &e);
    CHECK_ERR_CONTAINS(rc, e, "/nonexistent/x: cannot open");
    unlink(path);
    rmdir(dir);
}

static void test_rng_deterministic(void) {
    xd_rng a, b;
    xd_rng_seed(&a, 42);
    xd_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(xd_rng_next(&a) == xd_rng_next(&b));
    double sum = 0, sum2 = 0;
    for (int i = 0; i < 20000; i++) {
        float x = xd_rng_normal(&a);
        sum += x;
        sum2 += x * x;
    }
    CHECK_NEAR(sum / 20000, 0.0, 0.05);
    CHECK_NEAR(sum2 / 20000, 1.0, 0.05);
}

int main(void) {
    test_half_conversions();
    test_atomic_write_and_read();
    test_rng_deterministic();
    TEST_MAIN_END();
}
