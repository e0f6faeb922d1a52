/* The student's small ops around the mLSTM branch, CPU reference in float and double (bodies in
 * student_ops_impl.h). */
#include "student_ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Rows of the feature-map backward handled per GEMM: bounds the scratch at FM_BLOCK * d. */
#define FM_BLOCK 64

size_t kern_feature_map_scratch_elems(int d) { return (size_t)FM_BLOCK * (size_t)d; }

/* log(sigmoid(z)) = -softplus(-z) = min(z, 0) - log1p(exp(-|z|)): exp never overflows and the
 * log1p keeps the tiny values (-e^-z for large z) exact. */
static double so_logsigmoid(double z) { return (z < 0 ? z : 0.0) - log1p(exp(-fabs(z))); }

/* sigmoid without overflow: exp of a non-positive argument only. */
static double so_sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

#define real float
#define KFN(n) n##_f32
#define GEMM cblas_sgemm
#include "student_ops_impl.h"
#undef real
#undef KFN
#undef GEMM

#define real double
#define KFN(n) n##_f64
#define GEMM cblas_dgemm
#include "student_ops_impl.h"
#undef real
#undef KFN
#undef GEMM
