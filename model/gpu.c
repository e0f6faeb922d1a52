/* model/gpu.c — the teacher and the student on one CUDA GPU (model/gpu.h): the CPU model's
 * forward and backward (model/student_impl.h, model/transformer.c) as a sequence of the CUDA
 * backend's kernels (kernels/cuda/cuda_ops.h) over B sequences at once. Layouts: token-major
 * [B*T, width] everywhere except the mLSTM's head-major [B*H, T, d]; weights in the CPU's flat
 * parameter array, fp32 master and a bf16 copy at the same offsets. */
#include "gpu.h"

#include "kernels/cuda/cuda_ops.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef kern_bf16 bf16;

/* one layer's student attention: what its backward needs */
typedef struct attn_acts {
    bf16 *q0, *k0, *v, *qr, *kr, *krep, *yswa, *yhat;
    float *o, *lse, *phq, *phk, *phq_h, *phk_h, *vh, *hm, *hm_h, *it, *lf, *it_h, *lf_h, *saved;
} attn_acts;

typedef struct layer_acts {
    float *x, *xmid; /* the layer's input and the stream after its attention */
    bf16 *xn1, *xn2, *gate, *up, *act;
    attn_acts a;
} layer_acts;

struct gpu_net {
    model_config cfg;
    const model_layout *L;
    int B, T, N; /* N = B*T tokens */
    unsigned flags;
    bool student;
    char device[160];
    size_t bytes;
    void *arena;
    /* weights */
    float *P, *Gr, *m, *v;
    bf16 *Pb;
    uint64_t n_params, n_moments;
    float *cos_t, *sin_t;
    int *ids, *uniq, *starts, *order, n_uniq;
    int *host_ids; /* [N] scratch for the embedding's backward */
    /* activations: layers [n_layers] (or 1), the final stream and norm, logits */
    layer_acts *layers;
    int n_acts;
    float *x_final, *logits, *tmp_nd; /* tmp_nd: fp32 [N, max(D, qd)] */
    bf16 *xnf, *dlogits, *attn_out;
    int cap_first, cap_last;
    bf16 *cap_xn, *cap_attn;
    /* backward temporaries */
    float *dx, *dxn, *dact, *dyhat, *d_o, *dhm, *dhm_h, *dphq_h, *dphk_h, *dvh, *dit_h, *dlf_h, *dit, *dlf, *dzf;
    float *dph_tmp, *dq, *dkrep, *dk, *dv;
    void *ws;
    bf16 *dx_bf, *dgate, *dup, *dyswa, *dq_s, *dk_s, *dv_s, *dq_bf, *dk_bf, *dv_bf, *dzi_b, *dzf_b;
    /* the loss */
    int *topi, *targets;
    float *topv, *row_ce, *row_kl;
    /* generation (gpu_gen): its caches and states, and the host RoPE frequencies for a step */
    struct gpu_gen *gen;
    const double *inv_freq;
};

/* One sequence's generation state: the teacher's KV cache (rows = capacity positions), or the
 * student's window (rows 0..S-1 the sink positions, row S + p % W position p's ring slot) and its
 * mLSTM states. Keys are stored with RoPE applied, as the attention reads them. */
struct gpu_gen {
    gpu_net *net;
    int pos, capacity, max_prompt, rows;
    bool stepping; /* the net's forward runs one token in step form */
    kern_bf16 *kc, *vc; /* [layers][rows][G*d] */
    float *C, *n, *m;   /* student: [layers*H][d*d], [layers*H][d], [layers*H] */
    void *ws;           /* the decode attention's partial results */
    float *logits;      /* [V], the last token's */
    void *mem;
    size_t mem_bytes;
};

static int cuda_fail(xd_err *e, const char *what) {
    return xd_fail(e, "%s: %s", what, kern_cuda_last_error());
}
/* The profile (gpu_profile): every kernel call timed alone (a sync before and after), summed by
 * the called function's name. Off: one branch per call. */
static bool prof_on;
typedef struct prof_entry {
    char name[48];
    double secs;
    long calls;
} prof_entry;
static prof_entry prof[64];
static int prof_n;
static double prof_start(void) {
    kern_cuda_sync(NULL);
    return xd_now();
}
static void prof_add(const char *call, double t0) {
    kern_cuda_sync(NULL);
    double dt = xd_now() - t0;
    size_t len = strcspn(call, "(");
    if (len >= sizeof prof[0].name) len = sizeof prof[0].name - 1;
    int i = 0;
    while (i < prof_n && (strlen(prof[i].name) != len || strncmp(prof[i].name, call, len))) i++;
    if (i == prof_n) {
        if (prof_n == 64) return;
        memset(&prof[prof_n], 0, sizeof prof[prof_n]);
        memcpy(prof[prof_n].name, call, len);
        prof[prof_n++].name[len] = 0;
    }
    prof[i].secs += dt;
    prof[i].calls++;
}
void gpu_profile(bool on) {
    prof_on = on;
    prof_n = 0;
}
void gpu_profile_report(FILE *f, double per) {
    double total = 0;
    for (int i = 0; i < prof_n; i++) total += prof[i].secs;
    for (int i = 0; i < prof_n; i++) /* by time, largest first */
        for (int j = i + 1; j < prof_n; j++)
            if (prof[j].secs > prof[i].secs) {
                prof_entry t = prof[i];
                prof[i] = prof[j], prof[j] = t;
            }
    for (int i = 0; i < prof_n; i++)
        fprintf(f, "  %-32s %9.2f ms %5.1f %% %7ld calls\n", prof[i].name, 1e3 * prof[i].secs / per,
                100 * prof[i].secs / total, prof[i].calls);
}

#define K(call)                                                  \
    do {                                                         \
        double t0_ = prof_on ? prof_start() : 0;                 \
        if ((call) != 0) return cuda_fail(e, #call);             \
        if (prof_on) prof_add(#call, t0_);                       \
    } while (0)

/* ---- the arena: every buffer carved from one allocation (sizes first, then addresses) ---- */

typedef struct arena {
    char *base;
    size_t used;
} arena;
static void *take(arena *a, size_t bytes) {
    size_t at = (a->used + 255) & ~(size_t)255;
    a->used = at + bytes;
    return a->base ? a->base + at : (void *)(uintptr_t)1; /* non-NULL while sizing */
}
#define TAKE(a, ptr, n) ((ptr) = take((a), sizeof *(ptr) * (size_t)(n)))

static void carve(gpu_net *g, arena *a) {
    const model_config *c = &g->cfg;
    size_t N = (size_t)g->N, D = (size_t)c->hidden, F = (size_t)c->ffn, V = (size_t)c->vocab;
    size_t H = (size_t)c->n_heads, G = (size_t)c->n_kv_heads, d = (size_t)c->head_dim;
    size_t qd = H * d, kvd = G * d, half = d / 2;
    bool train = g->flags & GPU_TRAIN, one = g->flags & GPU_ONE_LAYER;
    TAKE(a, g->P, g->n_params);
    TAKE(a, g->Pb, g->n_params);
    if (train) {
        TAKE(a, g->Gr, g->n_params);
        TAKE(a, g->m, g->n_params);
        TAKE(a, g->v, g->n_params);
    }
    TAKE(a, g->cos_t, N * half); /* the T positions' rows once per sequence: one RoPE call a batch */
    TAKE(a, g->sin_t, N * half);
    TAKE(a, g->ids, N);
    TAKE(a, g->uniq, N);
    TAKE(a, g->starts, N + 1);
    TAKE(a, g->order, N);
    TAKE(a, g->targets, N);
    TAKE(a, g->tmp_nd, N * (qd > D ? qd : D));
    for (int l = 0; l < g->n_acts; l++) {
        layer_acts *la = &g->layers[l];
        attn_acts *at = &la->a;
        if (!one) {
            TAKE(a, la->x, N * D);
            TAKE(a, la->xmid, N * D);
            TAKE(a, la->xn1, N * D);
            TAKE(a, la->xn2, N * D);
            TAKE(a, la->gate, N * F);
            TAKE(a, la->up, N * F);
            TAKE(a, la->act, N * F);
        }
        TAKE(a, at->q0, N * qd);
        TAKE(a, at->k0, N * kvd);
        TAKE(a, at->v, N * kvd);
        TAKE(a, at->qr, N * qd);
        TAKE(a, at->kr, N * kvd);
        TAKE(a, at->yswa, N * qd);
        TAKE(a, at->lse, N * H);
        if (g->student) {
            TAKE(a, at->krep, N * qd);
            TAKE(a, at->yhat, N * qd);
            TAKE(a, at->o, N * H);
            TAKE(a, at->phq, N * qd);
            TAKE(a, at->phk, N * qd);
            TAKE(a, at->hm, N * qd);
            TAKE(a, at->phq_h, N * qd);
            TAKE(a, at->phk_h, N * qd);
            TAKE(a, at->vh, N * qd);
            TAKE(a, at->hm_h, N * qd);
            TAKE(a, at->it, N * H);
            TAKE(a, at->lf, N * H);
            TAKE(a, at->it_h, N * H);
            TAKE(a, at->lf_h, N * H);
            at->saved = take(a, kern_cuda_mlstm_saved_bytes(g->B * (int)H, g->T, c->chunk, (int)d, (int)d));
        }
    }
    if (!one) {
        TAKE(a, g->x_final, N * D);
        TAKE(a, g->xnf, N * D);
    }
    if (g->flags & GPU_LOGITS) TAKE(a, g->logits, N * V);
    if (g->cap_last >= 0) {
        size_t nl = (size_t)(g->cap_last - g->cap_first + 1);
        TAKE(a, g->cap_xn, nl * N * D);
        TAKE(a, g->cap_attn, nl * N * qd);
    }

    if (train) {
        if (g->flags & GPU_LOGITS) {
            TAKE(a, g->dlogits, N * V);
            TAKE(a, g->topi, N * 1024);
            TAKE(a, g->topv, N * 1024);
            TAKE(a, g->row_ce, N);
            TAKE(a, g->row_kl, N);
        }
        TAKE(a, g->dx, N * D);
        TAKE(a, g->dxn, N * D);
        TAKE(a, g->dact, N * F);
        TAKE(a, g->dyhat, N * qd);
        TAKE(a, g->d_o, N * H);
        TAKE(a, g->dhm, N * qd);
        TAKE(a, g->dhm_h, N * qd);
        TAKE(a, g->dphq_h, N * qd);
        TAKE(a, g->dphk_h, N * qd);
        TAKE(a, g->dvh, N * qd);
        TAKE(a, g->dit_h, N * H);
        TAKE(a, g->dlf_h, N * H);
        TAKE(a, g->dit, N * H);
        TAKE(a, g->dlf, N * H);
        TAKE(a, g->dzf, N * H);
        TAKE(a, g->dzi_b, N * H);
        TAKE(a, g->dzf_b, N * H);
        TAKE(a, g->dph_tmp, N * qd);
        TAKE(a, g->dq, N * qd);
        TAKE(a, g->dkrep, N * qd);
        TAKE(a, g->dk, N * kvd);
        TAKE(a, g->dv, N * kvd);
        g->ws = take(a, kern_cuda_mlstm_workspace_bytes(g->B * (int)H, g->T, c->chunk, (int)d, (int)d));
        TAKE(a, g->dx_bf, N * D);
        TAKE(a, g->dgate, N * F);
        TAKE(a, g->dup, N * F);
        TAKE(a, g->dyswa, N * qd);
        TAKE(a, g->dq_s, N * qd);
        TAKE(a, g->dk_s, N * kvd);
        TAKE(a, g->dv_s, N * kvd);
        TAKE(a, g->dq_bf, N * qd);
        TAKE(a, g->dk_bf, N * kvd);
        TAKE(a, g->dv_bf, N * kvd);
    }
    if (!g->student) TAKE(a, g->attn_out, N * qd);
}

int gpu_net_open(gpu_net **out, const model_transformer *m, int device, int B, int T, unsigned flags,
                 int capture_first, int capture_last, xd_err *e) {
    *out = NULL;
    const model_config *c = &m->cfg;
    if (B < 1 || T < 1 || (int64_t)B * T > (1 << 24))
        return xd_fail(e, "gpu: a batch of %d x %d tokens is out of range", B, T);
    if (c->student && (c->head_dim != 64 || c->n_heads > 32))
        return xd_fail(e, "gpu: the CUDA student needs head_dim 64 and at most 32 heads (this one: %d, %d)",
                       c->head_dim, c->n_heads);
    if (c->head_dim != 64 && c->head_dim != 128)
        return xd_fail(e, "gpu: the CUDA attention needs head_dim 64 or 128 (this model: %d)", c->head_dim);
    if (c->hidden > 6144 && (flags & GPU_TRAIN))
        return xd_fail(e, "gpu: the CUDA RMSNorm backward handles widths up to 6144 (this model: %d)", c->hidden);
    if (c->o_bias) return xd_fail(e, "gpu: output-projection biases are not supported on the GPU");
    if ((flags & GPU_ONE_LAYER) && !c->student) return xd_fail(e, "gpu: one-layer mode is for a student");
    char name[128];
    double gib = 0;
    if (kern_cuda_use_device(device, name, sizeof name, &gib)) return cuda_fail(e, "gpu");
    gpu_net *g = xd_calloc(1, sizeof *g, e);
    if (!g) return -1;
    g->cfg = *c;
    g->L = &m->layout;
    g->B = B, g->T = T, g->N = B * T;
    g->flags = flags;
    g->student = c->student;
    g->n_params = m->layout.n_params;
    g->cap_first = capture_first, g->cap_last = capture_last;
    if (capture_last >= c->n_layers || (capture_last >= 0 && (capture_first < 0 || capture_first > capture_last))) {
        free(g);
        return xd_fail(e, "gpu: capture layers %d-%d out of range", capture_first, capture_last);
    }
    snprintf(g->device, sizeof g->device, "%s (device %d, %.0f GiB)", name, device, gib);
    g->n_acts = (flags & GPU_ONE_LAYER) ? 1 : (flags & GPU_TRAIN) ? c->n_layers : 1;
    g->layers = xd_calloc((size_t)g->n_acts, sizeof *g->layers, e);
    g->host_ids = g->layers ? xd_malloc(sizeof(int) * 3 * (size_t)g->N + sizeof(int), e) : NULL;
    if (!g->host_ids) {
        gpu_net_close(g);
        return -1;
    }
    arena a = {NULL, 0};
    carve(g, &a);
    g->bytes = a.used;
    g->arena = kern_cuda_alloc(a.used);
    if (!g->arena) {
        xd_fail(e, "gpu: %s for %s at %d x %d tokens", kern_cuda_last_error(), m->source, B, T);
        gpu_net_close(g);
        return -1;
    }
    memset(g->layers, 0, sizeof *g->layers * (size_t)g->n_acts);
    a = (arena){g->arena, 0};
    carve(g, &a);
    /* RoPE tables for positions 0..T-1 */
    int half = c->head_dim / 2;
    float *tab = xd_malloc(sizeof(float) * 2 * (size_t)T * half, e);
    int rc = tab ? 0 : -1;
    if (tab) {
        kern_rope_tables_f32(tab, tab + (size_t)T * half, 0, T, half, m->rope_inv_freq);
        size_t bytes = sizeof(float) * (size_t)T * half;
        for (int b = 0; b < B && rc == 0; b++)
            if (kern_cuda_copy((char *)g->cos_t + b * bytes, tab, bytes, 0, NULL) ||
                kern_cuda_copy((char *)g->sin_t + b * bytes, tab + (size_t)T * half, bytes, 0, NULL) ||
                kern_cuda_sync(NULL))
                rc = cuda_fail(e, "gpu: RoPE tables");
        free(tab);
    }
    if (rc == 0) rc = gpu_net_set_params(g, m->params, e);
    if (rc == 0 && (flags & GPU_TRAIN)) rc = gpu_net_zero_grads(g, e);
    if (rc == 0 && (flags & GPU_TRAIN) &&
        (kern_cuda_zero(g->m, sizeof(float) * g->n_params, NULL) || kern_cuda_zero(g->v, sizeof(float) * g->n_params, NULL)))
        rc = cuda_fail(e, "gpu: moments");
    if (rc) {
        gpu_net_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

void gpu_net_close(gpu_net *g) {
    if (!g) return;
    kern_cuda_free(g->arena);
    free(g->layers);
    free(g->host_ids);
    free(g);
}

const char *gpu_net_device(const gpu_net *g) { return g->device; }
double gpu_net_bytes(const gpu_net *g) { return (double)g->bytes; }
const float *gpu_net_logits(const gpu_net *g) { return g->logits; }
uint16_t *gpu_net_dlogits(gpu_net *g) { return g->dlogits; }
float *gpu_net_dyhat(gpu_net *g) { return g->dyhat; }
const uint16_t *gpu_net_capture_xn(const gpu_net *g, int layer) {
    if (layer < g->cap_first || layer > g->cap_last) return NULL;
    return g->cap_xn + (size_t)(layer - g->cap_first) * g->N * g->cfg.hidden;
}
const uint16_t *gpu_net_capture_attn(const gpu_net *g, int layer) {
    if (layer < g->cap_first || layer > g->cap_last) return NULL;
    return g->cap_attn + (size_t)(layer - g->cap_first) * g->N * g->cfg.n_heads * g->cfg.head_dim;
}

int gpu_net_set_params(gpu_net *g, const float *params, xd_err *e) {
    K(kern_cuda_copy(g->P, params, sizeof(float) * g->n_params, 0, NULL));
    K(kern_cuda_cast_bf16(g->Pb, g->P, g->n_params, NULL));
    K(kern_cuda_sync(NULL));
    return 0;
}
int gpu_net_get_params(gpu_net *g, float *params, xd_err *e) {
    K(kern_cuda_copy(params, g->P, sizeof(float) * g->n_params, 1, NULL));
    return 0;
}

static float *pf(const gpu_net *g, uint64_t off) { return off == MODEL_ABSENT ? NULL : g->P + off; }
static float *gf(const gpu_net *g, uint64_t off) { return off == MODEL_ABSENT ? NULL : g->Gr + off; }
static bf16 *pb(const gpu_net *g, uint64_t off) { return off == MODEL_ABSENT ? NULL : g->Pb + off; }

/* y[N, out] (bf16) = x W^T + b */
static int linear(gpu_net *g, bf16 *y, const bf16 *x, uint64_t w, uint64_t b, int in, int outw, xd_err *e) {
    K(kern_cuda_matmul(y, 0, x, pb(g, w), g->N, outw, in, 0, 1, 1.0f, 0.0f, NULL));
    if (b != MODEL_ABSENT) K(kern_cuda_bias_bf16(y, pf(g, b), g->N, outw, NULL));
    return 0;
}
/* stream[N, outw] (fp32) += x W^T */
static int linear_add(gpu_net *g, float *stream, const bf16 *x, uint64_t w, int in, int outw, xd_err *e) {
    K(kern_cuda_matmul(stream, 1, x, pb(g, w), g->N, outw, in, 0, 1, 1.0f, 1.0f, NULL));
    /* no output bias: gpu_net_open refuses models with one */
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* the token ids, checked, uploaded; the distinct ids and their positions for the embedding's
 * backward */
static int upload_ids(gpu_net *g, const int *tokens, xd_err *e) {
    int V = g->cfg.vocab, N = g->N;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return xd_fail(e, "gpu: token %d at position %d is outside the vocabulary (%d)", tokens[i], i, V);
    K(kern_cuda_copy(g->ids, tokens, sizeof(int) * (size_t)N, 0, NULL));
    if (!(g->flags & GPU_TRAIN)) return 0;
    int *order = g->host_ids, *uniq = order + N, *starts = uniq + N;
    /* (id, position) pairs sorted: ids ascending, positions ascending within an id */
    uint64_t *key = xd_malloc(sizeof(uint64_t) * (size_t)N, e);
    if (!key) return -1;
    for (int i = 0; i < N; i++) key[i] = (uint64_t)tokens[i] << 32 | (uint32_t)i;
    qsort(key, (size_t)N, sizeof *key, cmp_u64);
    for (int i = 0; i < N; i++) order[i] = (int)(uint32_t)key[i];
    free(key);
    int nu = 0;
    for (int i = 0; i < N; i++)
        if (i == 0 || tokens[order[i]] != tokens[order[i - 1]]) {
            uniq[nu] = tokens[order[i]];
            starts[nu++] = i;
        }
    starts[nu] = N;
    g->n_uniq = nu;
    K(kern_cuda_copy(g->order, order, sizeof(int) * (size_t)N, 0, NULL));
    K(kern_cuda_copy(g->uniq, uniq, sizeof(int) * (size_t)nu, 0, NULL));
    K(kern_cuda_copy(g->starts, starts, sizeof(int) * (size_t)(nu + 1), 0, NULL));
    K(kern_cuda_sync(NULL)); /* host_ids is reused by the next call */
    return 0;
}

/* generation: row r of a layer's cache, and n token-major rows of keys and values stored there */
static bf16 *gen_row(const gpu_net *g, bf16 *cache, int layer, int row) {
    return cache + ((size_t)layer * g->gen->rows + (size_t)row) * g->cfg.n_kv_heads * g->cfg.head_dim;
}
static int gen_put_rows(gpu_net *g, int layer, int row, const bf16 *k, const bf16 *v, int n, xd_err *e) {
    size_t bytes = sizeof(bf16) * (size_t)n * g->cfg.n_kv_heads * g->cfg.head_dim;
    K(kern_cuda_copy(gen_row(g, g->gen->kc, layer, row), k, bytes, 2, NULL));
    K(kern_cuda_copy(gen_row(g, g->gen->vc, layer, row), v, bytes, 2, NULL));
    return 0;
}
/* a student's prompt of T tokens: the first S positions into the sink rows, the last W into their
 * ring slots (kern_swa_cache_push's layout) */
static int gen_keep_window(gpu_net *g, int layer, const attn_acts *a, xd_err *e) {
    int T = g->T, S = g->cfg.sinks, W = g->cfg.window;
    size_t kvd = (size_t)g->cfg.n_kv_heads * g->cfg.head_dim;
    if (gen_put_rows(g, layer, 0, a->kr, a->v, T < S ? T : S, e)) return -1;
    for (int p = T - W > 0 ? T - W : 0; p < T;) {
        int slot = p % W, len = W - slot < T - p ? W - slot : T - p;
        if (gen_put_rows(g, layer, S + slot, a->kr + (size_t)p * kvd, a->v + (size_t)p * kvd, len, e)) return -1;
        p += len;
    }
    return 0;
}

/* q0, k0, v and their RoPE'd copies qr, kr for one layer */
static int qkv_rope(gpu_net *g, const model_layer_offsets *o, const bf16 *xn, attn_acts *a, xd_err *e) {
    const model_config *c = &g->cfg;
    int D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim, qd = H * d, kvd = G * d;
    if (linear(g, a->q0, xn, o->wq, o->bq, D, qd, e) || linear(g, a->k0, xn, o->wk, o->bk, D, kvd, e) ||
        linear(g, a->v, xn, o->wv, o->bv, D, kvd, e))
        return -1;
    K(kern_cuda_copy(a->qr, a->q0, sizeof(bf16) * (size_t)g->N * qd, 2, NULL));
    K(kern_cuda_copy(a->kr, a->k0, sizeof(bf16) * (size_t)g->N * kvd, 2, NULL));
    K(kern_cuda_rope_bf16(a->qr, g->N, H, d, 0, g->cos_t, g->sin_t, NULL));
    K(kern_cuda_rope_bf16(a->kr, g->N, G, d, 0, g->cos_t, g->sin_t, NULL));
    return 0;
}

/* the student's attention of one layer: a->yhat from xn (model/student_impl.h's order) */
static int student_attention_fwd(gpu_net *g, int layer, const bf16 *xn, attn_acts *a, xd_err *e) {
    const model_config *c = &g->cfg;
    const model_layer_offsets *o = &g->L->layers[layer];
    int B = g->B, T = g->T, N = g->N, D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim;
    if (qkv_rope(g, o, xn, a, e)) return -1;
    K(kern_cuda_output_gate_fwd(a->o, a->q0, a->k0, a->v, pf(g, o->ogate_w), pf(g, o->ogate_b), N, H, G, d, NULL));
    K(kern_cuda_swa_fwd_bf16(a->yswa, a->lse, a->qr, a->kr, a->v, B, T, H, G, d, c->window, c->sinks, NULL));
    const bf16 *kx = a->kr;
    if (G != H) {
        K(kern_cuda_repeat_heads_bf16(a->krep, a->kr, N, H, G, d, NULL));
        kx = a->krep;
    }
    K(kern_cuda_feature_map_fwd_bf16(a->phq, a->qr, pf(g, o->fmap_q), N, H, d, NULL));
    K(kern_cuda_to_heads_f32(a->phq_h, a->phq, B, T, H, H, d, NULL));
    K(kern_cuda_feature_map_fwd_bf16(a->phk, kx, pf(g, o->fmap_k), N, H, d, NULL));
    K(kern_cuda_to_heads_f32(a->phk_h, a->phk, B, T, H, H, d, NULL));
    K(kern_cuda_to_heads_bf16(a->vh, a->v, B, T, H, G, d, NULL));
    /* the gates' products on cuBLAS ([N, D] x [D, H]), then the biases and logsigmoid */
    K(kern_cuda_matmul(a->it, 1, xn, pb(g, o->igate_w), N, H, D, 0, 0, 1.0f, 0.0f, NULL));
    K(kern_cuda_matmul(a->lf, 1, xn, pb(g, o->fgate_w), N, H, D, 0, 0, 1.0f, 0.0f, NULL));
    K(kern_cuda_gates_finish(a->it, a->lf, pf(g, o->igate_b), pf(g, o->fgate_b), N, H, NULL));
    K(kern_cuda_to_heads_f32(a->it_h, a->it, B, T, H, H, 1, NULL));
    K(kern_cuda_to_heads_f32(a->lf_h, a->lf, B, T, H, H, 1, NULL));
    /* training and inference alike: the tensor-core chunk products are 3xTF32, fp32-accurate, so
     * the fp32 backward (which recomputes them in fp32) is consistent with this forward */
    K(kern_cuda_mlstm_fwd(a->hm_h, a->saved, a->phq_h, a->phk_h, a->vh, a->it_h, a->lf_h, B * H, T, c->chunk, d, d,
                          (float)c->mlstm_eps, NULL));
    K(kern_cuda_from_heads_f32(a->hm, a->hm_h, B, T, H, H, d, 0, NULL));
    K(kern_cuda_mix_fwd(a->yhat, a->o, a->hm, a->yswa, N, H, d, NULL));
    if (g->gen) { /* a prompt: what the step form continues from */
        size_t hs = (size_t)layer * H;
        if (gen_keep_window(g, layer, a, e)) return -1;
        K(kern_cuda_mlstm_final_state(g->gen->C + hs * d * d, g->gen->n + hs * d, g->gen->m + hs, a->saved, a->phk_h,
                                      a->vh, a->it_h, a->lf_h, B * H, T, c->chunk, d, d, NULL));
    }
    return 0;
}

/* one token of the student's attention in step form (g->N == 1, position g->gen->pos): its key and
 * value into the window, the attention over the sinks and the window, one mLSTM step. At one
 * token the token-major and head-major layouts coincide. */
static int student_attention_step(gpu_net *g, int layer, const bf16 *xn, attn_acts *a, xd_err *e) {
    const model_config *c = &g->cfg;
    const model_layer_offsets *o = &g->L->layers[layer];
    gpu_gen *gen = g->gen;
    int D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim, S = c->sinks, W = c->window;
    int pos = gen->pos;
    if (qkv_rope(g, o, xn, a, e)) return -1;
    K(kern_cuda_output_gate_fwd(a->o, a->q0, a->k0, a->v, pf(g, o->ogate_w), pf(g, o->ogate_b), 1, H, G, d, NULL));
    if (pos < S && gen_put_rows(g, layer, pos, a->kr, a->v, 1, e)) return -1;
    if (gen_put_rows(g, layer, S + pos % W, a->kr, a->v, 1, e)) return -1;
    int ws = pos - W + 1 > 0 ? pos - W + 1 : 0, ns = S < ws ? S : ws; /* sinks older than the window */
    K(kern_cuda_decode_attn_bf16(a->yswa, a->qr, gen_row(g, gen->kc, layer, 0), gen_row(g, gen->vc, layer, 0), 0, ns,
                                 S, pos + 1 < W ? pos + 1 : W, H, G, d, gen->ws, NULL));
    const bf16 *kx = a->kr;
    if (G != H) {
        K(kern_cuda_repeat_heads_bf16(a->krep, a->kr, 1, H, G, d, NULL));
        kx = a->krep;
    }
    K(kern_cuda_feature_map_fwd_bf16(a->phq, a->qr, pf(g, o->fmap_q), 1, H, d, NULL));
    K(kern_cuda_feature_map_fwd_bf16(a->phk, kx, pf(g, o->fmap_k), 1, H, d, NULL));
    K(kern_cuda_to_heads_bf16(a->vh, a->v, 1, 1, H, G, d, NULL));
    K(kern_cuda_matmul(a->it, 1, xn, pb(g, o->igate_w), 1, H, D, 0, 0, 1.0f, 0.0f, NULL));
    K(kern_cuda_matmul(a->lf, 1, xn, pb(g, o->fgate_w), 1, H, D, 0, 0, 1.0f, 0.0f, NULL));
    K(kern_cuda_gates_finish(a->it, a->lf, pf(g, o->igate_b), pf(g, o->fgate_b), 1, H, NULL));
    size_t hs = (size_t)layer * H;
    K(kern_cuda_mlstm_step(a->hm, gen->C + hs * d * d, gen->n + hs * d, gen->m + hs, a->phq, a->phk, a->vh, a->it,
                           a->lf, H, d, d, (float)c->mlstm_eps, NULL));
    K(kern_cuda_mix_fwd(a->yhat, a->o, a->hm, a->yswa, 1, H, d, NULL));
    return 0;
}

/* its backward from dyhat (fp32): the new parameters' gradients always; full: also q/k/v's and
 * g->dxn (overwritten) */
static int student_attention_bwd(gpu_net *g, int layer, const bf16 *xn, const attn_acts *a, const float *dyhat,
                                 bool full, xd_err *e) {
    const model_config *c = &g->cfg;
    const model_layer_offsets *o = &g->L->layers[layer];
    int B = g->B, T = g->T, N = g->N, D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim;
    size_t qd = (size_t)H * d, kvd = (size_t)G * d;
    K(kern_cuda_mix_bwd(g->d_o, g->dhm, g->dyswa, dyhat, a->o, a->hm, a->yswa, N, H, d, NULL));
    K(kern_cuda_to_heads_f32(g->dhm_h, g->dhm, B, T, H, H, d, NULL));
    K(kern_cuda_mlstm_bwd(g->dphq_h, g->dphk_h, g->dvh, g->dit_h, g->dlf_h, g->ws, g->dhm_h, a->hm_h, a->saved,
                          a->phq_h, a->phk_h, a->vh, a->it_h, a->lf_h, B * H, T, c->chunk, d, d, (float)c->mlstm_eps,
                          NULL));
    K(kern_cuda_from_heads_f32(g->dit, g->dit_h, B, T, H, H, 1, 0, NULL));
    K(kern_cuda_from_heads_f32(g->dlf, g->dlf_h, B, T, H, H, 1, 0, NULL));
    /* the gates' dx goes into dxn (the q/k/v products add to it below); align discards it */
    K(kern_cuda_zero(g->dxn, sizeof(float) * (size_t)N * D, NULL));
    K(kern_cuda_gates_dz(g->dzi_b, g->dzf_b, g->dzf, g->dit, g->dlf, a->lf, N, H, NULL));
    K(kern_cuda_matmul(g->dxn, 1, g->dzi_b, pb(g, o->igate_w), N, D, H, 0, 1, 1.0f, 1.0f, NULL));
    K(kern_cuda_matmul(g->dxn, 1, g->dzf_b, pb(g, o->fgate_w), N, D, H, 0, 1, 1.0f, 1.0f, NULL));
    K(kern_cuda_matmul(gf(g, o->igate_w), 1, xn, g->dzi_b, D, H, N, 1, 0, 1.0f, 1.0f, NULL));
    K(kern_cuda_matmul(gf(g, o->fgate_w), 1, xn, g->dzf_b, D, H, N, 1, 0, 1.0f, 1.0f, NULL));
    K(kern_cuda_bias_bwd_f32(gf(g, o->igate_b), g->dit, N, H, NULL));
    K(kern_cuda_bias_bwd_f32(gf(g, o->fgate_b), g->dzf, N, H, NULL));
    /* feature maps: d(rope'd q) into dq, d(rope'd, repeated k) into dkrep */
    K(kern_cuda_zero(g->dq, sizeof(float) * N * qd, NULL));
    K(kern_cuda_from_heads_f32(g->dph_tmp, g->dphq_h, B, T, H, H, d, 0, NULL));
    K(kern_cuda_feature_map_bwd_bf16(g->dq, gf(g, o->fmap_q), g->dph_tmp, a->phq, a->qr, pf(g, o->fmap_q), N, H, d,
                                     NULL));
    K(kern_cuda_zero(g->dkrep, sizeof(float) * N * qd, NULL));
    K(kern_cuda_from_heads_f32(g->dph_tmp, g->dphk_h, B, T, H, H, d, 0, NULL));
    K(kern_cuda_feature_map_bwd_bf16(g->dkrep, gf(g, o->fmap_k), g->dph_tmp, a->phk, G != H ? a->krep : a->kr,
                                     pf(g, o->fmap_k), N, H, d, NULL));
    K(kern_cuda_zero(g->dk, sizeof(float) * N * kvd, NULL));
    K(kern_cuda_sum_heads_f32(g->dk, g->dkrep, N, H, G, d, NULL));
    /* v feeds every head of its group (mLSTM), then the window attention adds */
    K(kern_cuda_from_heads_f32(g->dv, g->dvh, B, T, H, G, d, 0, NULL));
    K(kern_cuda_swa_bwd_bf16(g->dq_s, g->dk_s, g->dv_s, g->dyswa, a->qr, a->kr, a->v, a->yswa, a->lse, B, T, H, G, d,
                             c->window, c->sinks, NULL));
    K(kern_cuda_add_bf16(g->dq, g->dq_s, N * qd, NULL));
    K(kern_cuda_add_bf16(g->dk, g->dk_s, N * kvd, NULL));
    K(kern_cuda_add_bf16(g->dv, g->dv_s, N * kvd, NULL));
    K(kern_cuda_rope_bwd_f32(g->dq, N, H, d, T, g->cos_t, g->sin_t, NULL));
    K(kern_cuda_rope_bwd_f32(g->dk, N, G, d, T, g->cos_t, g->sin_t, NULL));
    K(kern_cuda_output_gate_bwd(g->dq, g->dk, g->dv, gf(g, o->ogate_w), gf(g, o->ogate_b), g->d_o, a->o, a->q0, a->k0,
                                a->v, pf(g, o->ogate_w), N, H, G, d, NULL));
    if (!full) return 0;
    K(kern_cuda_cast_bf16(g->dq_bf, g->dq, N * qd, NULL));
    K(kern_cuda_cast_bf16(g->dk_bf, g->dk, N * kvd, NULL));
    K(kern_cuda_cast_bf16(g->dv_bf, g->dv, N * kvd, NULL));
    const bf16 *dys[3] = {g->dq_bf, g->dk_bf, g->dv_bf};
    const float *dyf[3] = {g->dq, g->dk, g->dv};
    uint64_t w[3] = {o->wq, o->wk, o->wv}, bias[3] = {o->bq, o->bk, o->bv};
    int width[3] = {(int)qd, (int)kvd, (int)kvd};
    for (int i = 0; i < 3; i++) {
        K(kern_cuda_matmul(gf(g, w[i]), 1, dys[i], xn, width[i], D, N, 1, 0, 1.0f, 1.0f, NULL));
        K(kern_cuda_matmul(g->dxn, 1, dys[i], pb(g, w[i]), N, D, width[i], 0, 0, 1.0f, 1.0f, NULL));
        if (bias[i] != MODEL_ABSENT) K(kern_cuda_bias_bwd_f32(gf(g, bias[i]), dyf[i], N, width[i], NULL));
    }
    return 0;
}

/* the teacher's attention of one layer: out [N, H*d] before W_o */
static int teacher_attention_fwd(gpu_net *g, int layer, const bf16 *xn, attn_acts *a, bf16 *out, xd_err *e) {
    const model_config *c = &g->cfg;
    if (qkv_rope(g, &g->L->layers[layer], xn, a, e)) return -1;
    if (g->gen && g->gen->stepping) { /* one token against the KV cache */
        int pos = g->gen->pos, W = c->sliding_window, lo = W > 0 && pos - W + 1 > 0 ? pos - W + 1 : 0;
        if (gen_put_rows(g, layer, pos, a->kr, a->v, 1, e)) return -1;
        K(kern_cuda_decode_attn_bf16(out, a->qr, gen_row(g, g->gen->kc, layer, 0), gen_row(g, g->gen->vc, layer, 0), lo,
                                     pos - lo + 1, 0, 0, c->n_heads, c->n_kv_heads, c->head_dim, g->gen->ws, NULL));
        return 0;
    }
    int W = c->sliding_window > 0 && c->sliding_window < g->T ? c->sliding_window : g->T;
    K(kern_cuda_swa_fwd_bf16(out, a->lse, a->qr, a->kr, a->v, g->B, g->T, c->n_heads, c->n_kv_heads, c->head_dim, W,
                             0, NULL));
    if (g->gen && gen_put_rows(g, layer, 0, a->kr, a->v, g->T, e)) return -1; /* a prompt: its keys and values */
    return 0;
}

/* the whole network; the student keeps every layer's activations in training mode */
static int forward(gpu_net *g, const int *tokens, xd_err *e) {
    const model_config *c = &g->cfg;
    const model_layout *L = g->L;
    if (g->flags & GPU_ONE_LAYER) return xd_fail(e, "gpu: a one-layer net has no whole forward");
    int N = g->N, D = c->hidden, F = c->ffn, qd = c->n_heads * c->head_dim;
    float eps = (float)c->rms_eps;
    if (upload_ids(g, tokens, e)) return -1;
    layer_acts *first = &g->layers[0];
    K(kern_cuda_embedding_f32(first->x, pf(g, L->embed), g->ids, N, D, NULL));
    /* a teacher run for its captures only stops after the last captured layer */
    int n_run = !g->logits && !g->student && g->cap_last >= 0 ? g->cap_last + 1 : c->n_layers;
    for (int l = 0; l < n_run; l++) {
        const model_layer_offsets *o = &L->layers[l];
        layer_acts *la = &g->layers[g->n_acts > 1 ? l : 0];
        float *xnext = l + 1 < c->n_layers ? g->layers[g->n_acts > 1 ? l + 1 : 0].x : g->x_final;
        K(kern_cuda_rmsnorm_f32(la->xn1, la->x, pf(g, o->attn_norm), N, D, eps, NULL));
        const bf16 *y;
        if (g->student) {
            if ((g->gen && g->gen->stepping ? student_attention_step : student_attention_fwd)(g, l, la->xn1, &la->a, e))
                return -1;
            y = la->a.yhat;
        } else {
            if (teacher_attention_fwd(g, l, la->xn1, &la->a, g->attn_out, e)) return -1;
            y = g->attn_out;
            if (l >= g->cap_first && l <= g->cap_last) {
                K(kern_cuda_copy((bf16 *)gpu_net_capture_xn(g, l), la->xn1, sizeof(bf16) * (size_t)N * D, 2, NULL));
                K(kern_cuda_copy((bf16 *)gpu_net_capture_attn(g, l), y, sizeof(bf16) * (size_t)N * qd, 2, NULL));
            }
        }
        K(kern_cuda_copy(la->xmid, la->x, sizeof(float) * (size_t)N * D, 2, NULL));
        if (linear_add(g, la->xmid, y, o->wo, qd, D, e)) return -1;
        K(kern_cuda_rmsnorm_f32(la->xn2, la->xmid, pf(g, o->mlp_norm), N, D, eps, NULL));
        if (linear(g, la->gate, la->xn2, o->w_gate, MODEL_ABSENT, D, F, e) ||
            linear(g, la->up, la->xn2, o->w_up, MODEL_ABSENT, D, F, e))
            return -1;
        K(kern_cuda_swiglu_bf16(la->act, la->gate, la->up, (size_t)N * F, NULL));
        /* in place when one set of activations is reused: xnext is la->x then */
        if (xnext != la->xmid) K(kern_cuda_copy(xnext, la->xmid, sizeof(float) * (size_t)N * D, 2, NULL));
        if (linear_add(g, xnext, la->act, o->w_down, F, D, e)) return -1;
    }
    if (n_run < c->n_layers) return 0;
    K(kern_cuda_rmsnorm_f32(g->xnf, g->x_final, pf(g, L->final_norm), N, D, eps, NULL));
    if (g->logits) K(kern_cuda_matmul(g->logits, 1, g->xnf, pb(g, L->lm_head), N, c->vocab, D, 0, 1, 1.0f, 0.0f, NULL));
    if (g->gen) /* generation: the last token's logits only */
        K(kern_cuda_matmul(g->gen->logits, 1, g->xnf + (size_t)(N - 1) * D, pb(g, L->lm_head), 1, c->vocab, D, 0, 1,
                           1.0f, 0.0f, NULL));
    return 0;
}

int gpu_teacher_forward(gpu_net *g, const int *tokens, xd_err *e) {
    if (g->student) return xd_fail(e, "gpu: gpu_teacher_forward on a student");
    return forward(g, tokens, e);
}
int gpu_student_forward(gpu_net *g, const int *tokens, xd_err *e) {
    if (!g->student) return xd_fail(e, "gpu: gpu_student_forward on a teacher");
    return forward(g, tokens, e);
}

int gpu_student_backward(gpu_net *g, xd_err *e) {
    const model_config *c = &g->cfg;
    const model_layout *L = g->L;
    if (!g->student || !(g->flags & GPU_TRAIN) || !g->dlogits || g->n_acts != c->n_layers)
        return xd_fail(e, "gpu: the backward needs a student net opened with GPU_TRAIN | GPU_LOGITS");
    int N = g->N, D = c->hidden, F = c->ffn, V = c->vocab, qd = c->n_heads * c->head_dim;
    float eps = (float)c->rms_eps;
    size_t nd = (size_t)N * D;
    /* LM head and final norm */
    K(kern_cuda_matmul(gf(g, L->lm_head), 1, g->dlogits, g->xnf, V, D, N, 1, 0, 1.0f, 1.0f, NULL));
    K(kern_cuda_matmul(g->tmp_nd, 1, g->dlogits, pb(g, L->lm_head), N, D, V, 0, 0, 1.0f, 0.0f, NULL));
    K(kern_cuda_rmsnorm_bwd_f32(g->dx, gf(g, L->final_norm), g->tmp_nd, g->x_final, pf(g, L->final_norm), N, D, eps, 0,
                                NULL));
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const model_layer_offsets *o = &L->layers[l];
        layer_acts *la = &g->layers[l];
        /* MLP: dx is d(x_next) = d(xmid) through the residual */
        K(kern_cuda_cast_bf16(g->dx_bf, g->dx, nd, NULL));
        K(kern_cuda_matmul(gf(g, o->w_down), 1, g->dx_bf, la->act, D, F, N, 1, 0, 1.0f, 1.0f, NULL));
        K(kern_cuda_matmul(g->dact, 1, g->dx_bf, pb(g, o->w_down), N, F, D, 0, 0, 1.0f, 0.0f, NULL));
        K(kern_cuda_swiglu_bwd(g->dgate, g->dup, g->dact, la->gate, la->up, (size_t)N * F, NULL));
        K(kern_cuda_matmul(gf(g, o->w_gate), 1, g->dgate, la->xn2, F, D, N, 1, 0, 1.0f, 1.0f, NULL));
        K(kern_cuda_matmul(gf(g, o->w_up), 1, g->dup, la->xn2, F, D, N, 1, 0, 1.0f, 1.0f, NULL));
        K(kern_cuda_matmul(g->dxn, 1, g->dgate, pb(g, o->w_gate), N, D, F, 0, 0, 1.0f, 0.0f, NULL));
        K(kern_cuda_matmul(g->dxn, 1, g->dup, pb(g, o->w_up), N, D, F, 0, 0, 1.0f, 1.0f, NULL));
        K(kern_cuda_rmsnorm_bwd_f32(g->dx, gf(g, o->mlp_norm), g->dxn, la->xmid, pf(g, o->mlp_norm), N, D, eps, 1,
                                    NULL));
        /* attention: dx is now d(xmid) */
        K(kern_cuda_cast_bf16(g->dx_bf, g->dx, nd, NULL));
        K(kern_cuda_matmul(gf(g, o->wo), 1, g->dx_bf, la->a.yhat, D, qd, N, 1, 0, 1.0f, 1.0f, NULL));
        if (o->bo != MODEL_ABSENT) K(kern_cuda_bias_bwd_f32(gf(g, o->bo), g->dx, N, D, NULL));
        K(kern_cuda_matmul(g->dyhat, 1, g->dx_bf, pb(g, o->wo), N, qd, D, 0, 0, 1.0f, 0.0f, NULL));
        if (student_attention_bwd(g, l, la->xn1, &la->a, g->dyhat, true, e)) return -1;
        K(kern_cuda_rmsnorm_bwd_f32(g->dx, gf(g, o->attn_norm), g->dxn, la->x, pf(g, o->attn_norm), N, D, eps, 1,
                                    NULL));
    }
    K(kern_cuda_embedding_bwd_f32(gf(g, L->embed), g->dx, g->uniq, g->starts, g->order, g->n_uniq, D, NULL));
    return 0;
}

const uint16_t *gpu_student_layer_forward(gpu_net *g, int layer, const uint16_t *xn, xd_err *e) {
    if (!g->student || layer < 0 || layer >= g->cfg.n_layers) {
        xd_fail(e, "gpu: layer %d of a %s", layer, g->student ? "student" : "teacher");
        return NULL;
    }
    attn_acts *a = &g->layers[0].a;
    return student_attention_fwd(g, layer, xn, a, e) ? NULL : a->yhat;
}

int gpu_student_layer_backward(gpu_net *g, int layer, const uint16_t *xn, const float *dyhat, xd_err *e) {
    if (!(g->flags & GPU_TRAIN)) return xd_fail(e, "gpu: the layer backward needs GPU_TRAIN");
    return student_attention_bwd(g, layer, xn, &g->layers[0].a, dyhat, false, e);
}

int gpu_mse(gpu_net *g, double *mse, const uint16_t *yhat, const uint16_t *target, double scale, xd_err *e) {
    size_t n = (size_t)g->N * g->cfg.n_heads * g->cfg.head_dim;
    K(kern_cuda_mse_bf16(mse, g->dyhat, yhat, target, n, (float)(2.0 * scale / (double)n), NULL));
    return 0;
}

int gpu_distill_loss(gpu_net *s, const gpu_net *t, const int *targets, int topk, double w_ce, double w_kl,
                     double share, double *ce, double *kl, xd_err *e) {
    int N = s->N, T = s->T, V = s->cfg.vocab;
    if (!s->dlogits || !t->logits || t->N != N || t->cfg.vocab != V)
        return xd_fail(e, "gpu: the distillation loss needs a training student and a teacher with logits");
    if (topk < 1 || topk > 1024 || topk > V) return xd_fail(e, "gpu: topk %d (the GPU keeps 1 to 1024)", topk);
    for (int i = 0; i < N; i++)
        if (targets[i] >= V) return xd_fail(e, "gpu: target %d at %d outside the vocabulary (%d)", targets[i], i, V);
    K(kern_cuda_copy(s->targets, targets, sizeof(int) * (size_t)N, 0, NULL));
    K(kern_cuda_topk_f32(s->topi, s->topv, t->logits, N, V, topk, NULL));
    int *valid = xd_calloc((size_t)s->B, sizeof(int), e); /* per sequence: its targets that count */
    if (!valid) return -1;
    for (int i = 0; i < N; i++) valid[i / T] += targets[i] >= 0;
    for (int b = 0; b < s->B; b++) {
        size_t r0 = (size_t)b * T;
        float ce_scale = valid[b] ? (float)(share * w_ce / ((double)valid[b] * s->B)) : 0.0f;
        if (kern_cuda_distill_loss_f32(s->row_ce + r0, s->row_kl + r0, s->dlogits + r0 * V, s->logits + r0 * V,
                                     s->targets + r0, s->topi + r0 * topk, s->topv + r0 * topk, T, V, topk, ce_scale,
                                     (float)(share * w_kl / ((double)T * s->B)), NULL)) {
            free(valid);
            return cuda_fail(e, "gpu: the distillation loss");
        }
    }
    float *rows = xd_malloc(sizeof(float) * 2 * (size_t)N, e);
    if (!rows || kern_cuda_copy(rows, s->row_ce, sizeof(float) * (size_t)N, 1, NULL) ||
        kern_cuda_copy(rows + N, s->row_kl, sizeof(float) * (size_t)N, 1, NULL)) {
        free(rows), free(valid);
        return rows ? cuda_fail(e, "gpu: loss rows") : -1;
    }
    *ce = *kl = 0;
    for (int b = 0; b < s->B; b++) {
        double cs = 0, ks = 0;
        for (size_t r = (size_t)b * T; r < (size_t)(b + 1) * T; r++) cs += rows[r], ks += rows[N + r];
        *ce += (valid[b] ? cs / valid[b] : 0) / s->B;
        *kl += ks / T / s->B;
    }
    free(rows), free(valid);
    return 0;
}

int gpu_net_zero_grads(gpu_net *g, xd_err *e) {
    if (!g->Gr) return xd_fail(e, "gpu: no gradients (open with GPU_TRAIN)");
    K(kern_cuda_zero(g->Gr, sizeof(float) * g->n_params, NULL));
    return 0;
}
int gpu_net_get_grads(gpu_net *g, float *grads, xd_err *e) {
    if (!g->Gr) return xd_fail(e, "gpu: no gradients (open with GPU_TRAIN)");
    K(kern_cuda_copy(grads, g->Gr, sizeof(float) * g->n_params, 1, NULL));
    return 0;
}
float *gpu_net_grad_buffer(gpu_net *g) { return g->Gr; }
int gpu_net_set_moments(gpu_net *g, const float *m, const float *v, uint64_t n, xd_err *e) {
    if (!g->m || n > g->n_params) return xd_fail(e, "gpu: %llu moments for %llu parameters", (unsigned long long)n,
                                                 (unsigned long long)g->n_params);
    g->n_moments = n;
    K(kern_cuda_copy(g->m, m, sizeof(float) * n, 0, NULL));
    K(kern_cuda_copy(g->v, v, sizeof(float) * n, 0, NULL));
    K(kern_cuda_sync(NULL));
    return 0;
}
int gpu_net_get_moments(gpu_net *g, float *m, float *v, xd_err *e) {
    K(kern_cuda_copy(m, g->m, sizeof(float) * g->n_moments, 1, NULL));
    K(kern_cuda_copy(v, g->v, sizeof(float) * g->n_moments, 1, NULL));
    return 0;
}

int gpu_net_clip_adamw(gpu_net *g, const uint64_t *offset, const uint64_t *count, int n_ranges, double max_norm,
                       double lr, double beta1, double beta2, double eps, double weight_decay, long step, double *norm,
                       xd_err *e) {
    double ss = 0;
    uint64_t total = 0;
    for (int r = 0; r < n_ranges; r++) {
        double part;
        K(kern_cuda_sumsq_f32(&part, g->Gr + offset[r], count[r], NULL));
        ss += part;
        total += count[r];
    }
    if (total != g->n_moments)
        return xd_fail(e, "gpu: %llu trainable parameters but %llu moments", (unsigned long long)total,
                       (unsigned long long)g->n_moments);
    *norm = sqrt(ss);
    if (!isfinite(*norm)) return 0;
    /* torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1 */
    double coef = max_norm / (*norm + 1e-6);
    uint64_t packed = 0;
    for (int r = 0; r < n_ranges; r++) {
        float *gr = g->Gr + offset[r];
        if (max_norm > 0 && coef < 1) K(kern_cuda_scale_f32(gr, (float)coef, count[r], NULL));
        K(kern_cuda_adamw(g->P + offset[r], gr, g->m + packed, g->v + packed, count[r], (float)lr, (float)beta1,
                          (float)beta2, (float)eps, (float)weight_decay, step, NULL));
        K(kern_cuda_cast_bf16(g->Pb + offset[r], g->P + offset[r], count[r], NULL));
        packed += count[r];
    }
    return 0;
}

/* ---- generation ---- */

int gpu_gen_open(gpu_gen **out, const model_transformer *m, int device, int max_prompt, int capacity, xd_err *e) {
    *out = NULL;
    const model_config *c = &m->cfg;
    if (max_prompt < 1 || (!c->student && capacity < max_prompt))
        return xd_fail(e, "gpu: a prompt of up to %d tokens in a cache of %d positions", max_prompt, capacity);
    gpu_gen *gen = xd_calloc(1, sizeof *gen, e);
    if (!gen) return -1;
    if (gpu_net_open(&gen->net, m, device, 1, max_prompt, 0, 0, -1, e)) {
        free(gen);
        return -1;
    }
    gpu_net *g = gen->net;
    g->gen = gen;
    g->inv_freq = m->rope_inv_freq;
    gen->max_prompt = max_prompt;
    gen->capacity = c->student ? 0 : capacity;
    gen->rows = c->student ? c->sinks + c->window : capacity;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, hs = c->student ? (size_t)c->n_layers * c->n_heads : 0;
    size_t d = (size_t)c->head_dim;
    arena a = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) { /* sizes, then addresses */
        TAKE(&a, gen->kc, (size_t)c->n_layers * gen->rows * kvd);
        TAKE(&a, gen->vc, (size_t)c->n_layers * gen->rows * kvd);
        TAKE(&a, gen->C, hs * d * d);
        TAKE(&a, gen->n, hs * d);
        TAKE(&a, gen->m, hs);
        TAKE(&a, gen->logits, c->vocab);
        gen->ws = take(&a, kern_cuda_decode_attn_ws_bytes(c->n_heads, c->head_dim, gen->rows));
        if (pass == 0) {
            gen->mem_bytes = a.used;
            gen->mem = kern_cuda_alloc(a.used);
            if (!gen->mem) {
                xd_fail(e, "gpu: %s for the generation state of %s", kern_cuda_last_error(), m->source);
                gpu_gen_close(gen);
                return -1;
            }
            a = (arena){gen->mem, 0};
        }
    }
    if (gpu_gen_reset(gen, e)) {
        gpu_gen_close(gen);
        return -1;
    }
    *out = gen;
    return 0;
}

int gpu_gen_reset(gpu_gen *gen, xd_err *e) {
    const model_config *c = &gen->net->cfg;
    size_t hs = c->student ? (size_t)c->n_layers * c->n_heads : 0;
    gen->pos = 0;
    /* the empty mLSTM state: C = 0, n = 0, m = -inf (the caches need no clearing: rows are read
     * only once written) */
    if (kern_cuda_zero(gen->C, sizeof(float) * hs * c->head_dim * c->head_dim, NULL) ||
        kern_cuda_zero(gen->n, sizeof(float) * hs * c->head_dim, NULL))
        return cuda_fail(e, "gpu: generation state");
    if (!hs) return 0;
    float *minf = xd_malloc(sizeof(float) * hs, e);
    if (!minf) return -1;
    for (size_t i = 0; i < hs; i++) minf[i] = -INFINITY;
    int rc = kern_cuda_copy(gen->m, minf, sizeof(float) * hs, 0, NULL) || kern_cuda_sync(NULL);
    free(minf);
    return rc ? cuda_fail(e, "gpu: generation state") : 0;
}

void gpu_gen_close(gpu_gen *gen) {
    if (!gen) return;
    kern_cuda_free(gen->mem);
    gpu_net_close(gen->net);
    free(gen);
}

const char *gpu_gen_device(const gpu_gen *gen) { return gen->net->device; }

double gpu_gen_state_bytes(const gpu_gen *gen) {
    const model_config *c = &gen->net->cfg;
    double kv_row = 2.0 * sizeof(bf16) * c->n_kv_heads * c->head_dim * c->n_layers;
    if (!c->student) return kv_row * gen->pos; /* the KV cache grows with the context */
    double hs = (double)c->n_layers * c->n_heads, d = c->head_dim;
    return kv_row * gen->rows + sizeof(float) * hs * (d * d + d + 1);
}

double gpu_gen_bytes(const gpu_gen *gen) { return (double)gen->mem_bytes + gpu_net_bytes(gen->net); }

/* one token at gen->pos in step form */
static int gen_step(gpu_gen *gen, int token, xd_err *e) {
    gpu_net *g = gen->net;
    const model_config *c = &g->cfg;
    if (!c->student && gen->pos >= gen->capacity)
        return xd_fail(e, "gpu: the KV cache is full (%d positions)", gen->capacity);
    int half = c->head_dim / 2;
    float tab[2 * 128];
    kern_rope_tables_f32(tab, tab + half, gen->pos, 1, half, g->inv_freq);
    g->T = g->N = 1;
    gen->stepping = true;
    int rc = 0;
    if (kern_cuda_copy(g->cos_t, tab, sizeof(float) * half, 0, NULL) ||
        kern_cuda_copy(g->sin_t, tab + half, sizeof(float) * half, 0, NULL))
        rc = cuda_fail(e, "gpu: RoPE row");
    if (rc == 0) rc = forward(g, &token, e);
    gen->stepping = false;
    if (rc == 0) gen->pos++;
    return rc;
}

int gpu_gen_feed(gpu_gen *gen, const int *tokens, int n, float *logits, xd_err *e) {
    gpu_net *g = gen->net;
    if (n < 1) return xd_fail(e, "gpu: nothing to feed");
    int rc = 0;
    if (gen->pos == 0 && n > 1) { /* a prompt: chunkwise, with the RoPE rows gpu_net_open wrote */
        if (n > gen->max_prompt)
            return xd_fail(e, "gpu: a prompt of %d tokens; this generator takes at most %d", n, gen->max_prompt);
        g->T = g->N = n;
        rc = forward(g, tokens, e);
        if (rc == 0) gen->pos = n;
    } else
        for (int i = 0; i < n && rc == 0; i++) rc = gen_step(gen, tokens[i], e);
    if (rc == 0 && logits && kern_cuda_copy(logits, gen->logits, sizeof(float) * (size_t)g->cfg.vocab, 1, NULL))
        rc = cuda_fail(e, "gpu: logits");
    return rc;
}
