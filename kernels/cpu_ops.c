/* CPU reference kernels that have no backward of their own: row softmax and the per-row
 * cross-entropy used for perplexity. The model's ops are in train_ops_impl.h. */
#include "kernels.h"

#include <float.h>
#include <math.h>

void kern_softmax_rows(float *x, int n, int d) {
    for (int t = 0; t < n; t++) {
        float *r = x + (size_t)t * d;
        float m = -FLT_MAX;
        for (int i = 0; i < d; i++) m = r[i] > m ? r[i] : m;
        double s = 0;
        for (int i = 0; i < d; i++) {
            r[i] = expf(r[i] - m);
            s += r[i];
        }
        float inv = (float)(1.0 / s);
        for (int i = 0; i < d; i++) r[i] *= inv;
    }
}

double kern_cross_entropy_row(const float *logits, int vocab, int target) {
    float m = -FLT_MAX;
    for (int i = 0; i < vocab; i++) m = logits[i] > m ? logits[i] : m;
    double s = 0;
    for (int i = 0; i < vocab; i++) s += exp((double)logits[i] - m);
    return log(s) + m - logits[target];
}
