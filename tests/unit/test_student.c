/* The hybrid student on the CPU: it reduces to its teacher when the output gate picks the attention
 * branch and the window covers the sequence; the whole model's backward (f64) matches central
 * finite differences; the step form reproduces the chunkwise logits; save/load round trip; and the
 * errors of a student config that disagrees with itself or its weights. */
#define _XOPEN_SOURCE 700
#include "kernels/kernels.h"
#include "model/model.h"
#include "test.h"

#include <unistd.h>

static int *read_ids(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    int cap = 4096, *ids = malloc(sizeof(int) * cap);
    *n = 0;
    while (f && *n < cap && fscanf(f, "%d", &ids[*n]) == 1) (*n)++;
    if (f) fclose(f);
    return ids;
}

static double max_rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = isnan(d) ? INFINITY : fmax(md, d);
        mb = fmax(mb, fabs(b[i]));
    }
    return md / mb;
}

static int load_student(const char *teacher_dir, int window, int sinks, int chunk,
                        model_transformer *s) {
    model_transformer t;
    xd_err e;
    if (model_transformer_load(teacher_dir, &t, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    model_student_settings set = {window, sinks, chunk, 1e-6, MODEL_FORGET_BIAS_MIN, MODEL_FORGET_BIAS_MAX, MODEL_OUTPUT_BIAS};
    int rc = model_student_init(&t, &set, s, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    model_transformer_free(&t);
    return rc;
}

/* New parameters away from their start values, so every path carries signal. */
static void randomize_new_params(model_transformer *s, uint64_t seed, float scale) {
    xd_rng r;
    xd_rng_seed(&r, seed);
    for (int i = 0; i < s->layout.n_entries; i++) {
        const model_tensor_entry *t = &s->layout.entries[i];
        if (!t->student_new) continue;
        for (uint64_t j = 0; j < t->count; j++) s->params[t->offset + j] += scale * xd_rng_normal(&r);
    }
}

static void test_reduces_to_teacher(const char *golden) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/qwen2", golden);
    model_transformer s;
    CHECK(load_student(dir, 1000, 4, 16, &s) == 0);
    int n;
    snprintf(path, sizeof path, "%s/ids.txt", dir);
    int *ids = read_ids(path, &n);
    CHECK(n == 48);
    /* o = sigmoid(-1e30) = 0: the student's output is the sliding-window branch alone */
    for (int l = 0; l < s.cfg.n_layers; l++)
        for (int h = 0; h < s.cfg.n_heads; h++) s.params[s.layout.layers[l].ogate_b + h] = -1e30f;
    randomize_new_params(&s, 5, 0.5f); /* the mLSTM branch is live but weighted 0 */
    for (int l = 0; l < s.cfg.n_layers; l++)
        for (int h = 0; h < s.cfg.n_heads; h++) s.params[s.layout.layers[l].ogate_b + h] = -1e30f;
    size_t V = (size_t)s.cfg.vocab;
    float *logits = malloc(sizeof(float) * n * V), *want = malloc(sizeof(float) * n * V);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(want, sizeof(float), n * V, f) == n * V);
    if (f) fclose(f);
    model_student_acts_f32 *acts;
    xd_err e;
    CHECK(model_student_acts_new_f32(&s.cfg, n, false, &acts, &e) == 0);
    CHECK(model_student_forward_f32(&s.cfg, &s.layout, s.params, s.rope_inv_freq, ids, n, logits, acts, &e) == 0);
    double err = max_rel_err(logits, want, n * V);
    printf("student with o = 0 and window >= T vs teacher (transformers): %.3g\n", err);
    CHECK_MSG(err <= 1e-4, "student != teacher: %g", err);
    model_student_acts_free_f32(acts);
    free(logits);
    free(want);
    free(ids);
    model_transformer_free(&s);
}

/* The whole student's gradient in float64 against central differences; and how far the f32
 * backward is from it. */
static void test_gradients(const char *golden, const char *name, int window, int sinks, int chunk,
                           double eps) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", golden, name);
    model_transformer s;
    CHECK(load_student(dir, window, sinks, chunk, &s) == 0);
    s.cfg.mlstm_eps = eps;
    randomize_new_params(&s, 11, 0.3f);
    const int T = 13;
    int ids[13];
    xd_rng r;
    xd_rng_seed(&r, 3);
    for (int t = 0; t < T; t++) ids[t] = (int)(xd_rng_next(&r) % (uint64_t)s.cfg.vocab);
    size_t N = s.layout.n_params, V = (size_t)s.cfg.vocab;
    double *p64 = malloc(sizeof(double) * N), *g64 = calloc(N, sizeof(double));
    double *R = malloc(sizeof(double) * T * V), *lg = malloc(sizeof(double) * T * V);
    float *g32 = calloc(N, sizeof(float)), *R32 = malloc(sizeof(float) * T * V);
    float *lg32 = malloc(sizeof(float) * T * V);
    for (size_t i = 0; i < N; i++) p64[i] = s.params[i];
    for (size_t i = 0; i < T * V; i++) R32[i] = (float)(R[i] = xd_rng_normal(&r));
    xd_err e;
    model_student_acts_f64 *a64;
    model_student_acts_f32 *a32;
    CHECK(model_student_acts_new_f64(&s.cfg, T, true, &a64, &e) == 0);
    CHECK(model_student_acts_new_f32(&s.cfg, T, true, &a32, &e) == 0);
    CHECK(model_student_forward_f64(&s.cfg, &s.layout, p64, s.rope_inv_freq, ids, T, lg, a64, &e) == 0);
    CHECK(model_student_backward_f64(&s.cfg, &s.layout, p64, a64, R, g64, ids, &e) == 0);
    CHECK(model_student_forward_f32(&s.cfg, &s.layout, s.params, s.rope_inv_freq, ids, T, lg32, a32, &e) == 0);
    CHECK(model_student_backward_f32(&s.cfg, &s.layout, s.params, a32, R32, g32, ids, &e) == 0);

    /* A few elements of every tensor, plus its largest-gradient one, relative to the tensor's
     * largest gradient — floored at 1e-3 of the whole gradient's largest: central differences
     * resolve about 1e-9 absolute here, so a tensor whose true gradient is far below the rest
     * cannot be checked relative to itself. (With eps = 1e-6 that is the input-gate bias: a shift
     * of every itilde of a head moves m_t by the same amount and cancels except through eps.) */
    double global = 0;
    for (size_t i = 0; i < N; i++) global = fmax(global, fabs(g64[i]));
    double worst = 0, worst32 = 0;
    const char *worst_name = "";
    for (int i = 0; i < s.layout.n_entries; i++) {
        const model_tensor_entry *t = &s.layout.entries[i];
        double gmax = 0, dmax = 0;
        uint64_t argmax = 0;
        for (uint64_t j = 0; j < t->count; j++) {
            double gv = fabs(g64[t->offset + j]);
            if (gv > gmax) gmax = gv, argmax = j;
            dmax = fmax(dmax, fabs(g64[t->offset + j] - g32[t->offset + j]));
        }
        double scale = fmax(gmax, 1e-3 * global);
        worst32 = fmax(worst32, dmax / scale);
        uint64_t picks[4] = {argmax, xd_rng_next(&r) % t->count, xd_rng_next(&r) % t->count,
                             xd_rng_next(&r) % t->count};
        double tensor_err = 0;
        for (int k = 0; k < 4; k++) {
            uint64_t idx = t->offset + picks[k];
            double keep = p64[idx], h = 1e-5 * fmax(1.0, fabs(keep)), lp = 0, lm = 0;
            p64[idx] = keep + h;
            model_student_forward_f64(&s.cfg, &s.layout, p64, s.rope_inv_freq, ids, T, lg, a64, &e);
            for (size_t q = 0; q < T * V; q++) lp += lg[q] * R[q];
            p64[idx] = keep - h;
            model_student_forward_f64(&s.cfg, &s.layout, p64, s.rope_inv_freq, ids, T, lg, a64, &e);
            for (size_t q = 0; q < T * V; q++) lm += lg[q] * R[q];
            p64[idx] = keep;
            double fd = (lp - lm) / (2 * h);
            tensor_err = fmax(tensor_err, fabs(fd - g64[idx]) / scale);
        }
        if (tensor_err > worst) worst = tensor_err, worst_name = t->name;
        CHECK_MSG(tensor_err <= 1e-6, "%s: %s gradient vs finite differences: %g", name, t->name, tensor_err);
    }
    printf("%s student (window %d, sinks %d, chunk %d, T %d, eps %g): f64 backward vs central "
           "differences worst %.3g (%s); f32 backward vs f64 worst %.3g\n",
           name, window, sinks, chunk, T, eps, worst, worst_name, worst32);
    CHECK_MSG(worst32 <= 1e-3, "f32 backward far from f64: %g", worst32);
    model_student_acts_free_f64(a64);
    model_student_acts_free_f32(a32);
    free(p64), free(g64), free(R), free(lg), free(g32), free(R32), free(lg32);
    model_transformer_free(&s);
}

static void test_step_form(const char *golden) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qwen2", golden);
    model_transformer s;
    CHECK(load_student(dir, 7, 2, 5, &s) == 0);
    randomize_new_params(&s, 17, 0.3f);
    const int T = 40;
    int ids[40];
    xd_rng r;
    xd_rng_seed(&r, 9);
    for (int t = 0; t < T; t++) ids[t] = (int)(xd_rng_next(&r) % (uint64_t)s.cfg.vocab);
    size_t V = (size_t)s.cfg.vocab;
    float *chunk = malloc(sizeof(float) * T * V), *step = malloc(sizeof(float) * T * V);
    xd_err e;
    model_student_acts_f32 *a;
    CHECK(model_student_acts_new_f32(&s.cfg, T, false, &a, &e) == 0);
    CHECK(model_student_forward_f32(&s.cfg, &s.layout, s.params, s.rope_inv_freq, ids, T, chunk, a, &e) == 0);
    model_student_state st;
    CHECK(model_student_state_init(&st, &s.cfg, &e) == 0);
    for (int t = 0; t < T; t++) CHECK(model_student_step(&s, &st, ids[t], step + (size_t)t * V, &e) == 0);
    double err = max_rel_err(step, chunk, T * V);
    printf("step form vs chunkwise logits over %d tokens (window 7, sinks 2, chunk 5): %.3g; state %zu bytes\n",
           T, err, st.bytes);
    CHECK_MSG(err <= 1e-4, "step form differs from chunkwise: %g", err);
    /* a chunkwise prefill of the first 23 tokens (past the window and the chunk, not a multiple of
     * either) hands the step form the same state: the rest of the logits as before */
    model_student_state pre;
    CHECK(model_student_state_init(&pre, &s.cfg, &e) == 0);
    float *last = malloc(sizeof(float) * V);
    int P = 23;
    CHECK(model_student_prefill(&s, &pre, ids, P, last, &e) == 0);
    CHECK(pre.pos == P);
    double err_last = max_rel_err(last, step + (size_t)(P - 1) * V, V);
    for (int t = P; t < T; t++) CHECK(model_student_step(&s, &pre, ids[t], chunk + (size_t)t * V, &e) == 0);
    double err_rest = max_rel_err(chunk + (size_t)P * V, step + (size_t)P * V, (T - P) * V);
    printf("prefill of %d tokens then steps vs steps only: last prompt token %.3g, the %d after %.3g\n", P,
           err_last, T - P, err_rest);
    CHECK_MSG(err_last <= 1e-4 && err_rest <= 1e-4, "prefill differs from the step form: %g, %g", err_last,
              err_rest);
    free(last);
    model_student_state_free(&pre);
    model_student_state_free(&st);
    model_student_acts_free_f32(a);
    free(chunk), free(step);
    model_transformer_free(&s);
}

static void test_save_load_and_errors(const char *golden) {
    char src[1024], dir[] = "/tmp/xd_test_student_XXXXXX", cfg_path[1100];
    snprintf(src, sizeof src, "%s/llama", golden);
    CHECK(mkdtemp(dir) != NULL);
    model_transformer s, back;
    xd_err e;
    CHECK(load_student(src, 8, 3, 4, &s) == 0);
    randomize_new_params(&s, 23, 0.1f);
    CHECK(model_save(&s, dir, NULL, &e) == 0);
    CHECK_MSG(model_transformer_load(dir, &back, &e) == 0, "%s", e.msg);
    CHECK(back.cfg.student && back.cfg.window == 8 && back.cfg.sinks == 3 && back.cfg.chunk == 4);
    CHECK(back.n_params == s.n_params && memcmp(back.params, s.params, sizeof(float) * s.n_params) == 0);
    CHECK(back.cfg.hidden == s.cfg.hidden && back.cfg.n_kv_heads == s.cfg.n_kv_heads);
    model_transformer_free(&back);

    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    char *text;
    size_t len;
    CHECK(xd_read_file(cfg_path, 1 << 20, &text, &len, &e) == 0);
    struct {
        const char *from, *to, *fragment;
    } bad[] = {
        {"\"window\": 8", "\"window\": 0", "window 0 must be at least 1"},
        {"\"sinks\": 3", "\"sinks\": -1", "sinks -1 must be at least 0"},
        {"\"chunk\": 4", "\"chunk\": 0", "chunk 0 must be at least 1"},
        {"\"window\": 8", "\"window\": \"8\"", "\"window\" must be an integer"},
        {"\"num_attention_heads\": 4", "\"num_attention_heads\": 2",
         "tensor model.layers.0.self_attn.q_proj.weight has shape [64, 64], the config implies [32, 64]"},
        {"\"xlstm_hybrid\": {", "\"hybrid\": {", "needs its settings as object \"xlstm_hybrid\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *at = strstr(text, bad[i].from);
        CHECK_MSG(at != NULL, "config.json lacks %s", bad[i].from);
        if (!at) continue;
        char edited[1 << 14];
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - text), text, bad[i].to, at + strlen(bad[i].from));
        CHECK(xd_write_file_atomic(cfg_path, edited, strlen(edited), &e) == 0);
        int rc = model_transformer_load(dir, &back, &e);
        CHECK_ERR_CONTAINS(rc, e, bad[i].fragment);
    }
    free(text);
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    unlink(cfg_path);
    rmdir(dir);
    model_transformer_free(&s);
}

/* Align's unit: one layer's attention from a given input, MSE against a target, gradients of the
 * layer's new parameters (and nothing else) against central differences in f64. */
static void test_layer_gradients(const char *golden) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/llama", golden);
    model_transformer s;
    CHECK(load_student(dir, 4, 1, 3, &s) == 0);
    randomize_new_params(&s, 29, 0.3f);
    s.cfg.mlstm_eps = 0.1;
    const int T = 11, layer = 1;
    size_t N = s.layout.n_params, nx = (size_t)T * s.cfg.hidden, ny = (size_t)T * s.cfg.n_heads * s.cfg.head_dim;
    double *p = malloc(sizeof(double) * N), *g = calloc(N, sizeof(double));
    double *xn = malloc(sizeof(double) * nx), *y = malloc(sizeof(double) * ny), *dy = malloc(sizeof(double) * ny);
    xd_rng r;
    xd_rng_seed(&r, 31);
    for (size_t i = 0; i < N; i++) p[i] = s.params[i];
    for (size_t i = 0; i < nx; i++) xn[i] = xd_rng_normal(&r);
    for (size_t i = 0; i < ny; i++) y[i] = 0.3 * xd_rng_normal(&r);
    xd_err e;
    model_student_layer_f64 *w;
    CHECK(model_student_layer_new_f64(&s.cfg, s.rope_inv_freq, T, &w, &e) == 0);
    const double *yhat = model_student_layer_forward_f64(&s.cfg, &s.layout, p, layer, xn, w, &e);
    CHECK(yhat != NULL);
    kern_mse_f64(dy, yhat, y, ny);
    CHECK(model_student_layer_backward_f64(&s.cfg, &s.layout, p, layer, xn, w, dy, g, &e) == 0);
    double worst = 0, gmax = 0;
    for (int i = 0; i < s.layout.n_entries; i++) {
        const model_tensor_entry *t = &s.layout.entries[i];
        bool mine = t->student_new && strstr(t->name, "layers.1.") != NULL;
        for (uint64_t j = 0; j < t->count; j++) {
            if (!mine) CHECK_MSG(g[t->offset + j] == 0, "align touched %s", t->name);
            else gmax = fmax(gmax, fabs(g[t->offset + j]));
        }
    }
    for (int i = 0; i < s.layout.n_entries; i++) {
        const model_tensor_entry *t = &s.layout.entries[i];
        if (!t->student_new || !strstr(t->name, "layers.1.")) continue;
        for (int k = 0; k < 6; k++) {
            uint64_t idx = t->offset + xd_rng_next(&r) % t->count;
            double keep = p[idx], h = 1e-6 * fmax(1.0, fabs(keep)), lp, lm;
            p[idx] = keep + h;
            lp = kern_mse_f64(dy, model_student_layer_forward_f64(&s.cfg, &s.layout, p, layer, xn, w, &e), y, ny);
            p[idx] = keep - h;
            lm = kern_mse_f64(dy, model_student_layer_forward_f64(&s.cfg, &s.layout, p, layer, xn, w, &e), y, ny);
            p[idx] = keep;
            worst = fmax(worst, fabs((lp - lm) / (2 * h) - g[idx]) / gmax);
        }
    }
    printf("align layer: new-parameter gradients of the MSE vs central differences: %.3g\n", worst);
    CHECK_MSG(worst <= 1e-6, "align layer gradient error %g", worst);
    model_student_layer_free_f64(w);
    free(p), free(g), free(xn), free(y), free(dy);
    model_transformer_free(&s);
}

int main(void) {
    char golden[900];
    snprintf(golden, sizeof golden, "%s/golden", test_data_dir());
    test_reduces_to_teacher(golden);
    test_gradients(golden, "llama", 5, 2, 4, 1e-6);
    /* a large eps makes the gradient through the normaliser's eps (and m_t) large enough to check
     * every tensor relative to itself */
    test_gradients(golden, "qwen2", 4, 1, 3, 0.1);
    test_step_form(golden);
    test_layer_gradients(golden);
    test_save_load_and_errors(golden);
    TEST_MAIN_END();
}
