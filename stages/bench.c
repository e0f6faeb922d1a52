/* xtrain bench: tokens per second and model-FLOPs utilisation of the align and distill steps at a
 * given shape, on the GPU (or the CPU), with random weights and random tokens: the same code the
 * stages run (model/gpu.h, the trainer's clipping and AdamW), nothing written to disk.
 *
 * Model FLOPs per token (the usual 2 per multiply-add of every weight matrix, embedding lookups
 * excluded, attention and mLSTM products excluded): distill = 2 N_teacher + 6 N_student (the
 * teacher's forward, the student's forward and backward); align = 2 N_teacher(to the last
 * trained layer) + 2 N_qkv of the trained layers (the student's q/k/v products; only the new
 * parameters get gradients). MFU = model FLOPs per second / the peak given by --peak (TFLOP/s;
 * default: the bf16 GEMM this run measures with cuBLAS, 8192^3, and the H100 SXM datasheet's 989
 * as a second figure). */
#include "args.h"
#include "stages.h"
#include "trainer.h"

#include "kernels/kernels.h"
#include "model/model.h"
#ifdef XD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the teacher shapes the issue and the design name (config.json values of the released models) */
static int shape_config(const char *name, model_config *c, xd_err *e) {
    memset(c, 0, sizeof *c);
    c->arch = MODEL_ARCH_LLAMA;
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->rms_eps = 1e-5, c->tied_embeddings = true, c->bos_id = -1, c->eos_id = -1, c->max_positions = 131072;
    if (!strcmp(name, "smollm2-135m")) {
        c->n_layers = 30, c->hidden = 576, c->n_heads = 9, c->n_kv_heads = 3, c->head_dim = 64, c->ffn = 1536;
        c->vocab = 49152, c->rope_theta = 100000;
    } else if (!strcmp(name, "llama-1b")) {
        c->n_layers = 16, c->hidden = 2048, c->n_heads = 32, c->n_kv_heads = 8, c->head_dim = 64, c->ffn = 8192;
        c->vocab = 128256, c->rope_theta = 500000, c->rope_type = MODEL_ROPE_LLAMA3, c->rope_factor = 32;
        c->rope_low_freq_factor = 1, c->rope_high_freq_factor = 4, c->rope_original_max = 8192;
    } else
        return xd_fail(e, "shape \"%s\": expected smollm2-135m or llama-1b", name);
    return model_config_validate(c, name, e);
}

#ifdef XD_HAVE_CUDA
/* weights that take part in matrix products: the layers' projections and the LM head */
static double matmul_params(const model_config *c, int layers, bool lm_head) {
    double D = c->hidden, qd = (double)c->n_heads * c->head_dim, kvd = (double)c->n_kv_heads * c->head_dim;
    double per = D * qd * 2 + D * kvd * 2 + 3 * D * c->ffn;
    return per * layers + (lm_head ? D * c->vocab : 0);
}

static double now_synced(void) {
    kern_cuda_sync(NULL);
    return xd_now();
}

/* cuBLAS bf16 at 8192^3, the best of 10 after a warm-up: the ceiling the MFU is measured against */
static double gemm_peak_tflops(xd_err *e) {
    int n = 8192;
    kern_bf16 *a = kern_cuda_alloc(sizeof(kern_bf16) * 3 * (size_t)n * n);
    if (!a) return xd_fail(e, "%s", kern_cuda_last_error()), -1;
    kern_cuda_zero(a, sizeof(kern_bf16) * 3 * (size_t)n * n, NULL);
    double best = 1e30;
    for (int i = 0; i < 11; i++) {
        double t0 = now_synced();
        if (kern_cuda_matmul(a + 2 * (size_t)n * n, 0, a, a + (size_t)n * n, n, n, n, 0, 1, 1, 0, NULL)) {
            kern_cuda_free(a);
            return xd_fail(e, "%s", kern_cuda_last_error()), -1;
        }
        double dt = now_synced() - t0;
        if (i && dt < best) best = dt;
    }
    kern_cuda_free(a);
    return 2.0 * n * n * (double)n / best / 1e12;
}

static int bench_gpu(const model_transformer *teacher, const model_transformer *student, int device, int B, int T,
                     int steps, bool do_align, bool do_distill, double peak, bool profile, xd_err *e) {
    const model_config *c = &teacher->cfg;
    int N = B * T;
    int *tokens = xd_malloc(sizeof(int) * 2 * (size_t)N, e), *targets = tokens ? tokens + N : NULL;
    if (!tokens) return -1;
    xd_rng r;
    xd_rng_seed(&r, 7);
    for (int i = 0; i < 2 * N; i++) tokens[i] = (int)(xd_rng_next(&r) % (uint64_t)c->vocab);
    uint64_t off = 0, cnt = student->layout.n_params;
    if (kern_cuda_use_device(device, NULL, 0, NULL)) {
        free(tokens);
        return xd_fail(e, "device cuda:%d: %s", device, kern_cuda_last_error());
    }
    double measured = gemm_peak_tflops(e);
    if (measured < 0) return free(tokens), -1;
    if (peak <= 0) peak = measured;
    printf("device: cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s (MFU below against %.0f TFLOP/s)\n", measured, peak);
    int rc = 0;
    if (do_distill) {
        gpu_net *gt = NULL, *gs = NULL;
        rc = gpu_net_open(&gt, teacher, device, B, T, GPU_LOGITS, 0, -1, e);
        if (rc == 0) rc = gpu_net_open(&gs, student, device, B, T, GPU_TRAIN | GPU_LOGITS, 0, -1, e);
        if (rc == 0) {
            uint64_t n = student->layout.n_params;
            float *zeros = xd_calloc(n, sizeof(float), e);
            rc = zeros ? gpu_net_set_moments(gs, zeros, zeros, n, e) : -1;
            free(zeros);
        }
        double t_total = 0, parts[4] = {0};
        for (int s = 0; s <= steps + profile && rc == 0; s++) { /* step 0 warms up; a last one profiled */
            if (s == steps + 1) gpu_profile(true);
            double ce, kl, norm, t0 = now_synced(), t1, t2, t3;
            rc = gpu_net_zero_grads(gs, e) || gpu_teacher_forward(gt, tokens, e);
            t1 = now_synced();
            rc = rc || gpu_student_forward(gs, tokens, e) ||
                 gpu_distill_loss(gs, gt, targets, 256, 0.9, 0.1, 1.0, &ce, &kl, e);
            t2 = now_synced();
            rc = rc || gpu_student_backward(gs, e);
            t3 = now_synced();
            rc = rc || gpu_net_clip_adamw(gs, &off, &cnt, 1, 1.0, 1e-5, 0.9, 0.95, 1e-8, 0.1, s + 1, &norm, e);
            double t4 = now_synced();
            if (s && s <= steps) {
                t_total += t4 - t0;
                parts[0] += t1 - t0, parts[1] += t2 - t1, parts[2] += t3 - t2, parts[3] += t4 - t3;
            }
        }
        if (rc == 0) {
            double tps = (double)N * steps / t_total;
            double flops = 2 * matmul_params(c, c->n_layers, true) + 6 * matmul_params(&student->cfg, c->n_layers, true);
            printf("distill %s B %d T %d: %.0f tokens/s, %.1f ms/step (teacher fwd %.1f, student fwd+loss %.1f, "
                   "bwd %.1f, clip+AdamW %.1f), %.0f TFLOP/s model, MFU %.1f %% (%.1f %% of 989), %.1f GiB\n",
                   c->model_type, B, T, tps, 1e3 * t_total / steps, 1e3 * parts[0] / steps, 1e3 * parts[1] / steps,
                   1e3 * parts[2] / steps, 1e3 * parts[3] / steps, flops * tps / 1e12, 100 * flops * tps / 1e12 / peak,
                   100 * flops * tps / 1e12 / 989, (gpu_net_bytes(gt) + gpu_net_bytes(gs)) / 1073741824.0);
            if (profile) {
                printf("distill profile (one step, each call synchronised):\n");
                gpu_profile_report(stdout, 1);
                gpu_profile(false);
            }
        }
        gpu_net_close(gs);
        gpu_net_close(gt);
    }
    if (do_align && rc == 0) {
        gpu_net *gt = NULL, *gs = NULL;
        int last = c->n_layers - 1;
        rc = gpu_net_open(&gt, teacher, device, B, T, 0, 0, last, e);
        if (rc == 0) rc = gpu_net_open(&gs, student, device, B, T, GPU_TRAIN | GPU_ONE_LAYER, 0, -1, e);
        double t_total = 0;
        for (int s = 0; s <= steps + profile && rc == 0; s++) {
            if (s == steps + 1) gpu_profile(true);
            double t0 = now_synced();
            rc = gpu_net_zero_grads(gs, e) || gpu_teacher_forward(gt, tokens, e);
            for (int l = 0; l <= last && rc == 0; l++) {
                double mse;
                const uint16_t *y = gpu_student_layer_forward(gs, l, gpu_net_capture_xn(gt, l), e);
                rc = !y || gpu_mse(gs, &mse, y, gpu_net_capture_attn(gt, l), 1.0, e) ||
                     gpu_student_layer_backward(gs, l, gpu_net_capture_xn(gt, l), gpu_net_dyhat(gs), e);
            }
            double dt = now_synced() - t0;
            if (s && s <= steps) t_total += dt;
        }
        if (rc == 0) {
            double tps = (double)N * steps / t_total;
            double D = c->hidden, qkv = D * (double)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
            double flops = 2 * matmul_params(c, c->n_layers, false) + 2 * qkv * c->n_layers;
            printf("align   %s B %d T %d, all %d layers: %.0f tokens/s, %.1f ms/step, %.0f TFLOP/s model, MFU %.1f %% "
                   "(%.1f %% of 989), %.1f GiB\n",
                   c->model_type, B, T, c->n_layers, tps, 1e3 * t_total / steps, flops * tps / 1e12,
                   100 * flops * tps / 1e12 / peak, 100 * flops * tps / 1e12 / 989,
                   (gpu_net_bytes(gt) + gpu_net_bytes(gs)) / 1073741824.0);
            if (profile) {
                printf("align profile (one step, each call synchronised):\n");
                gpu_profile_report(stdout, 1);
                gpu_profile(false);
            }
        }
        gpu_net_close(gs);
        gpu_net_close(gt);
    }
    free(tokens);
    return rc;
}

/* Generation of one sequence, teacher against student: a prompt of ctx random tokens at once, then
 * n_new tokens one at a time (each step's logits read back, as xtrain generate does). */
static int bench_generate(const model_transformer *teacher, const model_transformer *student, int device,
                          const int *contexts, int n_ctx, int n_new, xd_err *e) {
    int max_ctx = 0;
    for (int i = 0; i < n_ctx; i++) max_ctx = contexts[i] > max_ctx ? contexts[i] : max_ctx;
    int V = teacher->cfg.vocab;
    int *tokens = xd_malloc(sizeof(int) * ((size_t)max_ctx + n_new), e);
    float *logits = tokens ? xd_malloc(sizeof(float) * (size_t)V, e) : NULL;
    if (!logits) return free(tokens), -1;
    xd_rng r;
    xd_rng_seed(&r, 11);
    for (int i = 0; i < max_ctx + n_new; i++) tokens[i] = (int)(xd_rng_next(&r) % (uint64_t)V);
    int rc = 0;
    for (int i = 0; i < n_ctx && rc == 0; i++)
        for (int k = 0; k < 2 && rc == 0; k++) {
            const model_transformer *m = k ? student : teacher;
            int ctx = contexts[i];
            gpu_gen *g = NULL;
            if ((rc = gpu_gen_open(&g, m, device, ctx, ctx + n_new, e))) break;
            /* a first short run warms the kernels up */
            rc = gpu_gen_feed(g, tokens, ctx < 64 ? ctx : 64, logits, e) || gpu_gen_feed(g, tokens, 1, logits, e) ||
                 gpu_gen_reset(g, e);
            double t0 = now_synced();
            rc = rc || gpu_gen_feed(g, tokens, ctx, logits, e);
            double t1 = now_synced();
            for (int s = 0; s < n_new && rc == 0; s++) rc = gpu_gen_feed(g, tokens + ctx + s, 1, logits, e);
            double t2 = now_synced();
            if (rc == 0)
                printf("generate %-7s context %6d: prefill %9.0f tokens/s (%7.1f ms), decode %7.1f tokens/s (%.2f ms a "
                       "token), %s %8.1f MiB, device memory %.2f GiB\n",
                       k ? "student" : "teacher", ctx, ctx / (t1 - t0), 1e3 * (t1 - t0), n_new / (t2 - t1),
                       1e3 * (t2 - t1) / n_new, k ? "state" : "KV cache", gpu_gen_state_bytes(g) / (1 << 20),
                       gpu_gen_bytes(g) / 1073741824.0);
            gpu_gen_close(g);
        }
    free(logits);
    free(tokens);
    return rc;
}
#endif

/* "1024,8192,32768" -> up to 16 positive ints */
static int parse_contexts(const char *text, int *out, int *n, xd_err *e) {
    *n = 0;
    for (const char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 2 || v > (1 << 22) || (*end && *end != ',') || *n == 16)
            return xd_fail(e, "--context \"%s\": expected up to 16 comma-separated lengths in 2..4194304", text);
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return *n ? 0 : xd_fail(e, "--context is empty");
}

int stage_bench(int argc, char **argv) {
    const char *shape = "smollm2-135m", *stage = "all", *device = "cuda";
    const char *context = "1024,8192,32768";
    int B = 8, T = 2048, steps = 5, window = 512, sinks = 4, chunk = 64, n_new = 128;
    double peak = 0;
    bool profile = false;
    arg_spec specs[] = {
        {"--shape", ARG_STRING, &shape, "smollm2-135m (default) or llama-1b: a teacher of that shape, random weights", false},
        {"--stage", ARG_STRING, &stage, "align, distill, all (default: both) or generate", false},
        {"--context", ARG_STRING, &context, "generate: prompt lengths (default 1024,8192,32768)", false},
        {"--new", ARG_INT, &n_new, "generate: tokens generated after each prompt (default 128)", false},
        {"--batch", ARG_INT, &B, "sequences per step (default 8)", false},
        {"--seq-len", ARG_INT, &T, "tokens per sequence (default 2048)", false},
        {"--steps", ARG_INT, &steps, "timed steps after one warm-up (default 5)", false},
        {"--device", ARG_STRING, &device, "cuda or cuda:N (default cuda)", false},
        {"--window", ARG_INT, &window, "the student's window (default 512)", false},
        {"--sinks", ARG_INT, &sinks, "sink tokens (default 4)", false},
        {"--chunk", ARG_INT, &chunk, "mLSTM chunk (default 64)", false},
        {"--peak", ARG_DOUBLE, &peak, "TFLOP/s for the MFU (default: the measured cuBLAS bf16 GEMM)", false},
        {"--profile", ARG_FLAG, &profile, "then one more step with every kernel call timed, by function", false},
    };
    int n = (int)(sizeof specs / sizeof specs[0]);
    xd_err e = {{0}};
    int prc = args_parse(specs, n, argc, argv, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain bench: %s\n", e.msg);
        args_usage("xtrain bench [--shape smollm2-135m|llama-1b] [--stage align|distill|all|generate] [--batch B] "
                   "[--seq-len T] [--steps N] [--context L,L,...] [--new N] [--device cuda[:N]]",
                   specs, n);
        return prc < 0 ? 2 : 0;
    }
    bool do_align = !strcmp(stage, "align") || !strcmp(stage, "all");
    bool do_distill = !strcmp(stage, "distill") || !strcmp(stage, "all");
    bool do_generate = !strcmp(stage, "generate");
    int contexts[16], n_ctx = 0;
    model_config c;
    int rc = 0;
    if (!do_align && !do_distill && !do_generate)
        rc = xd_fail(&e, "stage \"%s\": expected align, distill, all or generate", stage);
    else if (do_generate && parse_contexts(context, contexts, &n_ctx, &e))
        rc = -1;
    else if (do_generate && n_new < 1)
        rc = xd_fail(&e, "--new %d: must be at least 1", n_new);
    else if (B < 1 || T < 2 || steps < 1 || (double)B * T > (1 << 24))
        rc = xd_fail(&e, "batch %d x seq-len %d x steps %d: each must be positive, B x T at most 2^24", B, T, steps);
    else
        rc = shape_config(shape, &c, &e);
    int cuda = -1; /* the stages' parser: cpu, cuda, cuda:N, and the build without CUDA refused */
    if (rc == 0) rc = trainer_parse_device(device, &cuda, &e);
    if (rc == 0 && cuda < 0) rc = xd_fail(&e, "device \"%s\": xtrain bench runs on cuda or cuda:N", device);
#ifndef XD_HAVE_CUDA
    (void)peak, (void)profile;
#endif
    model_transformer teacher, student;
    memset(&teacher, 0, sizeof teacher);
    memset(&student, 0, sizeof student);
    if (rc == 0) rc = model_transformer_random(&teacher, &c, 1, 0.02f, &e);
    model_student_settings set = {window, sinks, chunk, 1e-6, MODEL_FORGET_BIAS_MIN, MODEL_FORGET_BIAS_MAX, MODEL_OUTPUT_BIAS};
    if (rc == 0) rc = model_student_init(&teacher, &set, &student, &e);
    if (rc == 0 && do_generate)
        printf("xtrain bench: %s-shaped teacher (%.1fM parameters) and student (%.1fM, window %d, %d sinks), random "
               "weights, generation of %d tokens after each prompt\n",
               shape, teacher.n_params / 1e6, student.n_params / 1e6, window, sinks, n_new);
    else if (rc == 0)
        printf("xtrain bench: %s-shaped teacher (%.1fM parameters) and student (%.1fM), random weights, B %d x T %d, "
               "%d timed steps\n",
               shape, teacher.n_params / 1e6, student.n_params / 1e6, B, T, steps);
#ifdef XD_HAVE_CUDA
    if (rc == 0 && do_generate) rc = bench_generate(&teacher, &student, cuda, contexts, n_ctx, n_new, &e);
    else if (rc == 0) rc = bench_gpu(&teacher, &student, cuda, B, T, steps, do_align, do_distill, peak, profile, &e);
#else
    (void)contexts, (void)n_ctx;
#endif
    if (rc) fprintf(stderr, "xtrain bench: %s\n", e.msg);
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    return rc ? 1 : 0;
}
