/* tests/test.h — a tiny assertion harness: every failed CHECK prints file:line and the
 * expression; main returns non-zero when any failed. */
#ifndef XD_TEST_H
#define XD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures = 0;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
            test_failures++;                                                                 \
        }                                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                 \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            test_failures++;                                                                 \
        }                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        if (!(fabs(a_ - b_) <= (tol))) {                                                     \
            fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, |diff| > %g\n", __FILE__, __LINE__, \
                    #a, a_, #b, b_, (double)(tol));                                          \
            test_failures++;                                                                 \
        }                                                                                    \
    } while (0)

/* The message of an error must contain the fragment: errors must name the problem. */
#define CHECK_ERR_CONTAINS(rc, err, fragment)                                                \
    do {                                                                                     \
        if ((rc) >= 0 || !strstr((err).msg, (fragment))) {                                   \
            fprintf(stderr, "%s:%d: expected an error containing \"%s\", got rc=%d \"%s\"\n", \
                    __FILE__, __LINE__, (fragment), (int)(rc), (err).msg);                   \
            test_failures++;                                                                 \
        }                                                                                    \
    } while (0)

#define TEST_MAIN_END()                                                                      \
    do {                                                                                     \
        if (test_failures) fprintf(stderr, "%d check(s) failed\n", test_failures);           \
        return test_failures ? 1 : 0;                                                        \
    } while (0)

/* Where test fixtures live (tests/data), from the environment ctest sets. */
static inline const char *test_data_dir(void) {
    const char *d = getenv("XD_TEST_DATA");
    return d ? d : "tests/data";
}

#endif
