/* CPU reference of the mLSTM cell (see mlstm.h). The body is in mlstm_impl.h, included once per
 * element type: f32 for training and generation, f64 so that the backward can be checked
 * against finite differences. */
#include "mlstm.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

size_t kern_mlstm_saved_len(int T, int L, int dk, int dv) {
    size_t nch = T > 0 ? ((size_t)T + L - 1) / L : 0;
    /* m and den per token, then the state entering chunks 1 .. nch-1 (chunk 0 starts at 0). */
    return 2 * (size_t)T + (nch > 0 ? nch - 1 : 0) * ((size_t)dk * dv + dk);
}

size_t kern_mlstm_scratch_len(int L, int dk, int dv) {
    /* Matches mlstm_carve: W, P, G; dnum; tmp; E, e; five vectors of L. */
    return 3 * (size_t)L * L + (size_t)L * dv + (size_t)L * (dk > dv ? dk : dv) + (size_t)dk * dv +
           dk + 5 * (size_t)L;
}

#define real float
#define KFN(n) n##_f32
#define GEMM cblas_sgemm
#define EXP expf
#include "mlstm_impl.h"
#undef real
#undef KFN
#undef GEMM
#undef EXP

#define real double
#define KFN(n) n##_f64
#define GEMM cblas_dgemm
#define EXP exp
#include "mlstm_impl.h"
#undef real
#undef KFN
#undef GEMM
#undef EXP
