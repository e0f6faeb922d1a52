/* Benchmark (not a test): CPU time per token of one SmolLM2-sized student layer (D 576, 9 heads of
 * 64, 3 kv heads, FFN 1536; window 512, 4 sinks, chunk 64), forward and backward, f32.
 *     build/tests/bench_student [T]        (default T = 2048) */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 2048;
    model_config c = {.arch = MODEL_ARCH_LLAMA, .model_type = "llama", .n_layers = 1, .hidden = 576,
                      .n_heads = 9, .n_kv_heads = 3, .head_dim = 64, .ffn = 1536, .vocab = 64,
                      .max_positions = 8192, .rms_eps = 1e-5, .rope_theta = 100000,
                      .tied_embeddings = true, .bos_id = -1, .eos_id = -1, .student = true,
                      .window = 512, .sinks = 4, .chunk = 64, .mlstm_eps = 1e-6};
    xd_err e;
    model_layout L;
    if (model_layout_build(&L, &c, false, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    float *p = malloc(sizeof(float) * L.n_params), *g = calloc(L.n_params, sizeof(float));
    xd_rng r;
    xd_rng_seed(&r, 1);
    for (uint64_t i = 0; i < L.n_params; i++) p[i] = 0.05f * xd_rng_normal(&r);
    double inv_freq[32];
    model_rope_inv_freq(&c, inv_freq);
    int *ids = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) ids[t] = t % c.vocab;
    float *logits = malloc(sizeof(float) * (size_t)T * c.vocab);
    model_student_acts_f32 *a;
    if (model_student_acts_new_f32(&c, T, true, &a, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    model_student_forward_f32(&c, &L, p, inv_freq, ids, T, logits, a, &e); /* warm-up */
    double best_f = 1e30, best_b = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_now();
        model_student_forward_f32(&c, &L, p, inv_freq, ids, T, logits, a, &e);
        double t1 = cpu_now();
        model_student_backward_f32(&c, &L, p, a, logits, g, ids, &e);
        double t2 = cpu_now();
        best_f = t1 - t0 < best_f ? t1 - t0 : best_f;
        best_b = t2 - t1 < best_b ? t2 - t1 : best_b;
    }
    printf("student layer (D 576, H 9/3, d 64, FFN 1536, W 512, S 4, L 64), T %d, f32, CPU time: "
           "forward %.1f us/token, backward %.1f us/token (embedding and a 64-entry LM head included)\n",
           T, 1e6 * best_f / T, 1e6 * best_b / T);
    return 0;
}
