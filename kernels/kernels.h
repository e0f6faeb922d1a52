/* kernels/kernels.h — the arithmetic of the teacher and student, CPU reference in fp32.
 * Matrices are row-major. Weights follow the Hugging Face layout W[out, in], so a linear layer
 * is y = x W^T (+ b). The ops with a backward are in train_ops.h, each as _f32 and _f64. */
#ifndef XD_KERNELS_H
#define XD_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "mlstm.h"
#include "student_ops.h"
#include "swa.h"
#include "train_ops.h"

/* In-place softmax over each row of x[n, d]. */
void kern_softmax_rows(float *x, int n, int d);

/* log-softmax cross-entropy of one row of logits against a target: -log p(target). */
double kern_cross_entropy_row(const float *logits, int vocab, int target);

#endif
