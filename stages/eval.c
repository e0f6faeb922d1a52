/* xtrain eval: stage 5 (DESIGN 1.2). Teacher and student on the same tasks:
 *  - perplexity on token shards (each source's val split): the training domains (`data`, labelled
 *    in-domain: the student was fine-tuned on them) and held-out general text (`general`), with
 *    the student's agreement with the teacher (mean KL(teacher || student) per token and top-1
 *    agreement), each also by token position (0 to the window, then up to 2x, 4x, ... the window),
 *    so what happens where the window no longer reaches is seen apart;
 *  - a pass key hidden in filler text at several depths, per context length, scored by greedy
 *    match (the key's tokens are each the argmax given the prompt and the key's earlier tokens,
 *    exactly what greedy decoding would produce);
 *  - multiple-choice tasks in .jsonl ({"context", "choices", "label"}), each choice scored by the
 *    log-likelihood of its tokens after the context: acc (highest sum) and acc_norm (highest sum per
 *    byte of the choice), as lm-evaluation-harness does.
 * Beside the student, the long-context tasks run a "window-only" student: the same weights with
 * every output gate closed (o = 0), so the mLSTM's contribution is seen by difference.
 * The report: per task teacher and student scores and recovery S/T; the win-and-tie rate C_alpha
 * over the tasks `score` names (by default every task but the in-domain perplexities; perplexity
 * enters as exp(-nll), a multiple-choice task as its acc_norm, the pass key as its accuracy) for
 * alpha in {0, .01, .02, .05, .1, .2}; and alpha*, the smallest alpha with C_alpha >= 0.5. */
#include "config.h"
#include "stages.h"
#include "trainer.h"
#include "kernels/kernels.h"
#include "model/data.h"
#include "model/model.h"
#ifdef XD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double alphas[] = {0, 0.01, 0.02, 0.05, 0.1, 0.2};
#define N_ALPHAS ((int)(sizeof alphas / sizeof alphas[0]))

enum { EVAL_TEACHER, EVAL_STUDENT, EVAL_WINDOW, EVAL_MODELS };
static const char *const model_key[EVAL_MODELS] = {"teacher", "student", "window_only"};
#define EVAL_MAX_BUCKETS 16
#define PASSKEY_MAX_LENGTHS 16

typedef struct eval_models {
    model_transformer *m[EVAL_MODELS]; /* teacher, student, window-only student (NULL when off) */
    model_kv_cache cache;
    float *hidden, *logits[2]; /* the teacher's logits, and those of the model compared with it */
    int cap;  /* longest sequence */
    int cuda; /* the device, -1 for the CPU */
    void *gpu[EVAL_MODELS]; /* on a GPU: a gpu_net of each model for one sequence of gpu_T tokens */
    int gpu_T, *padded;
} eval_models;

#ifdef XD_HAVE_CUDA
/* Logits [n, V] of model k on the GPU: the sequence padded to the nets' length (every model is
 * causal, so the padding changes none of the first n rows), the nets reopened longer (a power of
 * two) when a sequence does not fit. */
static int gpu_sequence_logits(eval_models *em, int k, const int *ids, int n, float *logits, xd_err *e) {
    if (n > em->gpu_T) {
        int T = 64;
        while (T < n) T *= 2;
        if (T > em->cap) T = em->cap;
        for (int i = 0; i < EVAL_MODELS; i++) {
            gpu_net_close(em->gpu[i]);
            em->gpu[i] = NULL;
        }
        em->gpu_T = 0;
        for (int i = 0; i < EVAL_MODELS; i++) {
            gpu_net *g = NULL;
            if (em->m[i] && gpu_net_open(&g, em->m[i], em->cuda, 1, T, GPU_LOGITS, 0, -1, e)) return -1;
            em->gpu[i] = g;
        }
        em->gpu_T = T;
        fprintf(stderr, "[eval] on %s: the models for sequences of up to %d tokens\n", gpu_net_device(em->gpu[0]),
                T);
    }
    memcpy(em->padded, ids, sizeof(int) * (size_t)n);
    for (int t = n; t < em->gpu_T; t++) em->padded[t] = 0;
    gpu_net *g = em->gpu[k];
    if ((k == EVAL_TEACHER ? gpu_teacher_forward : gpu_student_forward)(g, em->padded, e)) return -1;
    if (kern_cuda_copy(logits, gpu_net_logits(g), sizeof(float) * (size_t)n * em->m[k]->cfg.vocab, 1, NULL))
        return xd_fail(e, "gpu: logits: %s", kern_cuda_last_error());
    return 0;
}
#endif

/* Logits [n, V] of a sequence under model k. */
static int sequence_logits(eval_models *em, int k, const int *ids, int n, float *logits, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (em->cuda >= 0) return gpu_sequence_logits(em, k, ids, n, logits, e);
#endif
    const model_transformer *m = em->m[k];
    if (!m->cfg.student) {
        em->cache.length = 0;
        return model_transformer_forward(m, &em->cache, ids, n, logits, true, e);
    }
    if (model_student_hidden(m, ids, n, em->hidden, e)) return -1;
    model_lm_head(m, em->hidden, n, logits);
    return 0;
}

static double log_prob(const float *row, int V, int target) {
    return -kern_cross_entropy_row(row, V, target);
}

static int argmax_row(const float *row, int V) {
    int a = 0;
    for (int v = 1; v < V; v++)
        if (row[v] > row[a]) a = v;
    return a;
}

/* KL(p || q) of the softmaxes of two logit rows. */
static double kl_rows(const float *p_logits, const float *q_logits, int V) {
    double mp = p_logits[0], mq = q_logits[0];
    for (int v = 1; v < V; v++) {
        if (p_logits[v] > mp) mp = p_logits[v];
        if (q_logits[v] > mq) mq = q_logits[v];
    }
    double sp = 0, sq = 0;
    for (int v = 0; v < V; v++) sp += exp(p_logits[v] - mp), sq += exp(q_logits[v] - mq);
    double lzp = mp + log(sp), lzq = mq + log(sq), kl = 0;
    for (int v = 0; v < V; v++) {
        double lp = p_logits[v] - lzp;
        kl += exp(lp) * (lp - (q_logits[v] - lzq));
    }
    return kl > 0 ? kl : 0;
}

/* ---- perplexity by position ---- */

/* Bucket edges over token positions: 0, the end of what the window reaches from position 0
 * (sinks + window: every earlier position is the teacher's attention exactly), then each power of
 * two past it, up to T. */
static int position_edges(const model_config *student, int T, int *edges) {
    int n = 0, reach = student->sinks + student->window;
    edges[n++] = 0;
    if (reach < T) edges[n++] = reach;
    int p = 1;
    while (p <= reach) p *= 2;
    for (; p < T && n < EVAL_MAX_BUCKETS; p *= 2) edges[n++] = p;
    edges[n++] = T;
    return n - 1; /* buckets */
}

typedef struct ppl_sums {
    double nll, kl;
    long agree, count;
} ppl_sums;

static json_t *ppl_fields(const ppl_sums *s, int K, json_t *o) {
    for (int k = 0; k < K; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s_ppl", model_key[k]);
        json_object_set_new(o, key, json_real(s[k].count ? exp(s[k].nll / s[k].count) : NAN));
        if (k == EVAL_TEACHER) continue;
        snprintf(key, sizeof key, "%s%skl", k == EVAL_STUDENT ? "" : model_key[k], k == EVAL_STUDENT ? "" : "_");
        json_object_set_new(o, key, json_real(s[k].count ? s[k].kl / s[k].count : NAN));
        snprintf(key, sizeof key, "%s%stop1_agreement", k == EVAL_STUDENT ? "" : model_key[k],
                 k == EVAL_STUDENT ? "" : "_");
        json_object_set_new(o, key, json_real(s[k].count ? (double)s[k].agree / s[k].count : NAN));
    }
    return o;
}

/* One source: a val pass over it, every model against the teacher. */
static int eval_domain(eval_models *em, const char *dir, bool in_domain, int K, int T, long max_tokens,
                       json_t *tasks, xd_err *e) {
    model_data_source src = {dir, 1.0};
    model_data_loader *l;
    model_data_dir probe;
    if (model_data_open(dir, &probe, e)) return -1;
    uint64_t val_tokens = probe.tokens[MODEL_DATA_VAL];
    model_data_close(&probe);
    if (val_tokens == 0) { /* a domain whose split put every document in train: said, not hidden */
        fprintf(stderr, "[eval] %s has no validation tokens: no perplexity task for it\n", dir);
        return 1;
    }
    if (model_data_loader_open(&src, 1, MODEL_DATA_VAL, T, 0, &l, e)) return -1;
    const model_data_dir *d = model_data_loader_dir(l, 0);
    const char *slash = strrchr(dir, '/');
    char name[300];
    snprintf(name, sizeof name, "%s/%s", in_domain ? "ppl" : "general",
             d->domain[0] ? d->domain : (slash && slash[1] ? slash + 1 : dir));
    int V = em->m[0]->cfg.vocab, rc = 0, edges[EVAL_MAX_BUCKETS + 1];
    int nb = position_edges(&em->m[EVAL_STUDENT]->cfg, T, edges);
    int *in = xd_malloc(sizeof(int) * (size_t)T * 2, e), *tg = in ? in + T : NULL;
    ppl_sums all[EVAL_MODELS] = {{0}}, by[EVAL_MAX_BUCKETS][EVAL_MODELS];
    memset(by, 0, sizeof by);
    long count = 0;
    while (rc == 0 && in && count < max_tokens) {
        int r = model_data_next(l, in, tg, NULL, e);
        if (r == 1) break;
        if (r < 0) {
            rc = -1;
            break;
        }
        int n = T; /* this window's positions, within max_tokens */
        long left = max_tokens - count, valid = 0;
        for (int t = 0; t < T; t++)
            if (tg[t] >= 0 && ++valid > left && n == T) n = t;
        rc = sequence_logits(em, EVAL_TEACHER, in, T, em->logits[0], e);
        for (int k = 0; k < K && rc == 0; k++) {
            if (k > 0) rc = sequence_logits(em, k, in, T, em->logits[1], e);
            const float *lk = em->logits[k == 0 ? 0 : 1];
            for (int t = 0, b = 0; rc == 0 && t < n; t++) {
                while (t >= edges[b + 1]) b++;
                if (tg[t] < 0) continue;
                const float *row = lk + (size_t)t * V, *trow = em->logits[0] + (size_t)t * V;
                double nll = -log_prob(row, V, tg[t]), kl = k ? kl_rows(trow, row, V) : 0;
                int agree = k ? argmax_row(row, V) == argmax_row(trow, V) : 1;
                ppl_sums *s[2] = {&all[k], &by[b][k]};
                for (int i = 0; i < 2; i++) s[i]->nll += nll, s[i]->kl += kl, s[i]->agree += agree, s[i]->count++;
            }
        }
        count = all[0].count;
    }
    if (rc == 0 && count == 0) rc = xd_fail(e, "%s: no validation tokens to evaluate", dir);
    if (rc == 0) {
        double t_ppl = exp(all[0].nll / count), s_ppl = exp(all[1].nll / count);
        json_t *task = json_pack("{s:s, s:s, s:b, s:I}", "task", name, "kind", "perplexity", "in_domain", in_domain,
                                 "tokens", (json_int_t)count);
        ppl_fields(all, K, task);
        json_object_set_new(task, "teacher", json_real(1.0 / t_ppl));
        json_object_set_new(task, "student", json_real(1.0 / s_ppl));
        json_object_set_new(task, "recovery", json_real(t_ppl / s_ppl));
        json_t *positions = json_array();
        for (int b = 0; b < nb; b++) {
            if (by[b][0].count == 0) continue;
            json_t *p = json_pack("{s:i, s:i, s:I}", "from", edges[b], "to", edges[b + 1], "tokens",
                                  (json_int_t)by[b][0].count);
            json_array_append_new(positions, ppl_fields(by[b], K, p));
        }
        json_object_set_new(task, "by_position", positions);
        json_array_append_new(tasks, task);
        fprintf(stderr, "[eval] %-28s teacher ppl %8.3f  student ppl %8.3f  KL %.4f  top-1 agreement %.3f%s\n", name,
                t_ppl, s_ppl, all[1].kl / count, (double)all[1].agree / count, in_domain ? "  (in-domain)" : "");
        for (int b = 0; b < nb; b++) {
            if (by[b][0].count == 0) continue;
            fprintf(stderr, "[eval]   positions %5d-%-5d  teacher %8.3f  student %8.3f", edges[b], edges[b + 1],
                    exp(by[b][0].nll / by[b][0].count), exp(by[b][1].nll / by[b][1].count));
            if (K > EVAL_WINDOW) fprintf(stderr, "  window-only %8.3f", exp(by[b][2].nll / by[b][2].count));
            fprintf(stderr, "  KL %.4f\n", by[b][1].kl / by[b][1].count);
        }
    }
    free(in);
    model_data_loader_free(l);
    return rc;
}

/* ---- the pass key ---- */

/* The prompt of Mohtashami & Jaggi (2023), as long-context evaluations use it. */
static const char passkey_intro[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
static const char passkey_filler[] =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char passkey_needle[] = " The pass key is %d. Remember it. %d is the pass key.";
static const char passkey_question[] = " What is the pass key? The pass key is";

typedef struct passkey_parts {
    int *intro, *filler, *tail; /* tail: question and answer */
    size_t n_intro, n_filler, n_tail, answer_at; /* tail[answer_at..] is the answer */
} passkey_parts;

static int encode_piece(const model_tokenizer *tok, const char *text, bool bos, int **ids, size_t *n, xd_err *e) {
    return model_tokenizer_encode(tok, text, strlen(text), bos, false, ids, n, e);
}

/* The answer's tokens are those of question + answer past the question's own (as a choice's). */
static int passkey_tail(const model_tokenizer *tok, int key, passkey_parts *p, xd_err *e) {
    char text[160];
    int *q = NULL;
    size_t nq = 0;
    snprintf(text, sizeof text, "%s %d", passkey_question, key);
    if (encode_piece(tok, passkey_question, false, &q, &nq, e) ||
        encode_piece(tok, text, false, &p->tail, &p->n_tail, e)) {
        free(q);
        return -1;
    }
    size_t start = nq;
    while (start > 0 && (start > p->n_tail || memcmp(q, p->tail, sizeof(int) * start) != 0)) start--;
    free(q);
    p->answer_at = start;
    if (start == 0 || start >= p->n_tail) return xd_fail(e, "pass key: the answer has no tokens of its own");
    return 0;
}

/* Before any work: every length must hold the prompt around one filler (a 5-digit key's tokens). */
static int passkey_check_lengths(const model_tokenizer *tok, const int *lengths, int n_lengths, xd_err *e) {
    if (n_lengths == 0) return 0;
    if (!tok) return xd_fail(e, "pass key: the teacher has no tokenizer to build prompts with");
    passkey_parts p = {0};
    int *needle = NULL;
    size_t n_needle = 0;
    char text[160];
    snprintf(text, sizeof text, passkey_needle, 12345, 12345);
    int rc = encode_piece(tok, passkey_intro, model_tokenizer_adds_bos(tok), &p.intro, &p.n_intro, e);
    if (rc == 0) rc = encode_piece(tok, passkey_filler, false, &p.filler, &p.n_filler, e);
    if (rc == 0) rc = encode_piece(tok, text, false, &needle, &n_needle, e);
    if (rc == 0) rc = passkey_tail(tok, 12345, &p, e);
    size_t need = p.n_intro + n_needle + p.n_tail + p.n_filler;
    for (int i = 0; rc == 0 && i < n_lengths; i++)
        if ((size_t)lengths[i] < need)
            rc = xd_fail(e, "pass key: length %d is too short for the prompt (%zu tokens with one filler)", lengths[i],
                         need);
    free(needle), free(p.intro), free(p.filler), free(p.tail);
    return rc;
}

static int eval_passkey(eval_models *em, int K, const int *lengths, int n_lengths, int samples, long seed,
                        json_t *tasks, xd_err *e) {
    const model_tokenizer *tok = em->m[0]->tokenizer;
    if (!tok) return xd_fail(e, "pass key: the teacher has no tokenizer to build prompts with");
    const model_config *sc = &em->m[EVAL_STUDENT]->cfg;
    int V = em->m[0]->cfg.vocab, reach = sc->sinks + sc->window, rc = 0;
    passkey_parts p = {0};
    rc = encode_piece(tok, passkey_intro, model_tokenizer_adds_bos(tok), &p.intro, &p.n_intro, e);
    if (rc == 0) rc = encode_piece(tok, passkey_filler, false, &p.filler, &p.n_filler, e);
    int *ids = rc == 0 ? xd_malloc(sizeof(int) * (size_t)em->cap, e) : NULL;
    if (!ids) rc = -1;
    xd_rng rng;
    xd_rng_seed(&rng, (uint64_t)seed);
    for (int li = 0; li < n_lengths && rc == 0; li++) {
        int L = lengths[li], correct[EVAL_MODELS] = {0}, far = 0, far_correct[EVAL_MODELS] = {0}, longest = 0;
        json_t *items = json_array();
        for (int i = 0; i < samples && rc == 0; i++) {
            int key = 10000 + (int)(xd_rng_next(&rng) % 90000);
            char needle_text[160];
            snprintf(needle_text, sizeof needle_text, passkey_needle, key, key);
            int *needle = NULL;
            size_t n_needle = 0;
            free(p.tail);
            p.tail = NULL;
            if ((rc = encode_piece(tok, needle_text, false, &needle, &n_needle, e)) ||
                (rc = passkey_tail(tok, key, &p, e))) {
                free(needle);
                break;
            }
            size_t fixed = p.n_intro + n_needle + p.n_tail;
            long fillers = ((long)L - (long)fixed) / (long)p.n_filler;
            if (fillers < 1) {
                free(needle);
                rc = xd_fail(e, "pass key: length %d is too short for the prompt (%zu tokens and one filler of %zu)", L,
                             fixed, p.n_filler);
                break;
            }
            /* depths spread evenly over the filler, the same for every length */
            double depth = (i + 0.5) / samples;
            long before = lround(depth * (double)fillers);
            size_t n = 0;
            memcpy(ids + n, p.intro, sizeof(int) * p.n_intro), n += p.n_intro;
            for (long f = 0; f < fillers; f++) {
                if (f == before) memcpy(ids + n, needle, sizeof(int) * n_needle), n += n_needle;
                memcpy(ids + n, p.filler, sizeof(int) * p.n_filler), n += p.n_filler;
            }
            if (before == fillers) memcpy(ids + n, needle, sizeof(int) * n_needle), n += n_needle;
            size_t needle_at = p.n_intro + (size_t)before * p.n_filler, answer = n + p.answer_at;
            memcpy(ids + n, p.tail, sizeof(int) * p.n_tail), n += p.n_tail;
            free(needle);
            if ((int)n > longest) longest = (int)n;
            /* beyond the window: the key's last token is out of the answer's first query's reach */
            bool beyond = (long)answer - 1 - (long)(needle_at + n_needle - 1) >= sc->window &&
                          (long)needle_at >= sc->sinks;
            far += beyond;
            json_t *item = json_pack("{s:i, s:f, s:I, s:b}", "key", key, "depth", depth, "tokens", (json_int_t)n,
                                     "beyond_window", beyond);
            for (int k = 0; k < K && rc == 0; k++) {
                rc = sequence_logits(em, k, ids, (int)n, em->logits[1], e);
                bool ok = rc == 0;
                for (size_t t = answer; ok && t < n; t++) ok = argmax_row(em->logits[1] + (t - 1) * (size_t)V, V) == ids[t];
                correct[k] += ok;
                far_correct[k] += ok && beyond;
                json_object_set_new(item, model_key[k], json_boolean(ok));
            }
            json_array_append_new(items, item);
        }
        if (rc) {
            json_decref(items);
            break;
        }
        char name[64];
        snprintf(name, sizeof name, "passkey/%d", L);
        json_t *task = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "task", name, "kind", "passkey", "length", L,
                                 "longest_prompt", longest, "samples", samples, "beyond_window", far);
        for (int k = 0; k < K; k++) {
            char key[64];
            snprintf(key, sizeof key, "%s_acc", model_key[k]);
            json_object_set_new(task, key, json_real((double)correct[k] / samples));
            snprintf(key, sizeof key, "%s_acc_beyond_window", model_key[k]);
            json_object_set_new(task, key, far ? json_real((double)far_correct[k] / far) : json_null());
        }
        double ta = (double)correct[0] / samples, sa = (double)correct[1] / samples;
        json_object_set_new(task, "teacher", json_real(ta));
        json_object_set_new(task, "student", json_real(sa));
        json_object_set_new(task, "recovery", ta > 0 ? json_real(sa / ta) : sa > 0 ? json_null() : json_real(1.0));
        json_object_set_new(task, "items", items);
        json_array_append_new(tasks, task);
        fprintf(stderr, "[eval] %-28s teacher %d/%d  student %d/%d", name, correct[0], samples, correct[1], samples);
        if (K > EVAL_WINDOW) fprintf(stderr, "  window-only %d/%d", correct[2], samples);
        fprintf(stderr, "  (%d of %d keys beyond the window of %d; student %d/%d there)\n", far, samples, reach,
                far_correct[1], far);
    }
    free(ids);
    free(p.intro), free(p.filler), free(p.tail);
    return rc;
}

/* ---- lm-evaluation-harness task types, one .jsonl file a task ---- */

/* The log-likelihood of a continuation after a context under model k, and whether greedy decoding
 * would write it (every continuation token the argmax), tokenised as lm-evaluation-harness's
 * _encode_pair does: the context's trailing spaces move to the continuation, context + continuation
 * is encoded whole, and the continuation's tokens are those past the context's own count. */
typedef struct lm_pair {
    int *ids;
    size_t n, start; /* ids[start..n) is the continuation */
} lm_pair;

static int lm_pair_encode(const model_tokenizer *tok, const char *context, const char *continuation, int cap,
                          lm_pair *p, xd_err *e) {
    size_t cl = strlen(context), kl = strlen(continuation), spaces = 0;
    while (spaces < cl && (context[cl - 1 - spaces] == ' ' || context[cl - 1 - spaces] == '\t')) spaces++;
    char *whole = xd_malloc(cl + kl + 1, e);
    if (!whole) return -1;
    memcpy(whole, context, cl);
    memcpy(whole + cl, continuation, kl + 1);
    int *cids = NULL;
    size_t nc = 0;
    bool bos = model_tokenizer_adds_bos(tok);
    int rc = model_tokenizer_encode(tok, whole, cl - spaces, bos, false, &cids, &nc, e);
    if (rc == 0) rc = model_tokenizer_encode(tok, whole, cl + kl, bos, false, &p->ids, &p->n, e);
    free(whole);
    free(cids);
    p->start = nc;
    if (rc) return -1;
    if (p->n <= p->start || p->start == 0) return xd_fail(e, "the continuation has no tokens of its own");
    if (p->n > (size_t)cap) return xd_fail(e, "the item is %zu tokens, longer than %d", p->n, cap);
    return 0;
}

static int lm_pair_score(eval_models *em, int k, const lm_pair *p, double *ll, bool *greedy, xd_err *e) {
    int V = em->m[0]->cfg.vocab;
    if (sequence_logits(em, k, p->ids, (int)p->n, em->logits[1], e)) return -1;
    *ll = 0;
    *greedy = true;
    for (size_t t = p->start; t < p->n; t++) {
        const float *row = em->logits[1] + (t - 1) * (size_t)V;
        *ll += log_prob(row, V, p->ids[t]);
        if (argmax_row(row, V) != p->ids[t]) *greedy = false;
    }
    return 0;
}

/* Characters (code points) of a choice without its leading space: lm-evaluation-harness divides by
 * len(choice) of the choice as its doc_to_choice gives it, before target_delimiter " " joins it. */
static double choice_chars(const char *s) {
    if (*s == ' ') s++;
    double n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n > 0 ? n : 1;
}

typedef enum { LM_CHOICE, LM_TARGET, LM_PARTIAL } lm_kind;
static const char *const lm_kind_name[] = {"multiple_choice", "target", "partial"};
static const char *const lm_kind_prefix[] = {"mc", "target", "partial"};

/* One item of a task file: its kind from its keys, checked. */
static int lm_item_kind(json_t *o, lm_kind *kind) {
    json_t *ctx = json_object_get(o, "context"), *ch = json_object_get(o, "choices");
    json_t *tg = json_object_get(o, "target"), *ctxs = json_object_get(o, "contexts");
    json_t *cont = json_object_get(o, "continuation"), *lab = json_object_get(o, "label");
    size_t nl = json_is_array(ch) ? json_array_size(ch) : json_is_array(ctxs) ? json_array_size(ctxs) : 0;
    bool label_ok = json_is_integer(lab) && json_integer_value(lab) >= 0 && (size_t)json_integer_value(lab) < nl;
    if (json_is_string(ctx) && json_is_array(ch) && nl >= 2 && label_ok) *kind = LM_CHOICE;
    else if (json_is_string(ctx) && json_is_string(tg) && !ch) *kind = LM_TARGET;
    else if (json_is_array(ctxs) && nl >= 2 && json_is_string(cont) && label_ok) *kind = LM_PARTIAL;
    else return -1;
    json_t *list = *kind == LM_CHOICE ? ch : ctxs;
    for (size_t i = 0; list && i < json_array_size(list); i++)
        if (!json_is_string(json_array_get(list, i))) return -1;
    return 0;
}

/* One item under the teacher and the student: for a choice or partial item, correct (acc) and
 * correct_norm (acc_norm; partial: = acc, one continuation); for a target item, greedy match and
 * the target's log-likelihood. */
static int lm_item(eval_models *em, json_t *o, lm_kind kind, bool correct[2], bool correct_norm[2], double ll_out[2],
                   xd_err *e) {
    const model_tokenizer *tok = em->m[0]->tokenizer;
    if (kind == LM_TARGET) {
        lm_pair p = {0};
        int rc = lm_pair_encode(tok, json_string_value(json_object_get(o, "context")),
                                json_string_value(json_object_get(o, "target")), em->cap, &p, e);
        for (int k = 0; k < 2 && rc == 0; k++) rc = lm_pair_score(em, k, &p, &ll_out[k], &correct[k], e);
        free(p.ids);
        return rc;
    }
    json_t *list = json_object_get(o, kind == LM_CHOICE ? "choices" : "contexts");
    int label = (int)json_integer_value(json_object_get(o, "label")), rc = 0;
    double best[2] = {-INFINITY, -INFINITY}, best_norm[2] = {-INFINITY, -INFINITY};
    int arg[2] = {-1, -1}, arg_norm[2] = {-1, -1};
    for (size_t c = 0; rc == 0 && c < json_array_size(list); c++) {
        const char *item = json_string_value(json_array_get(list, c));
        const char *context = kind == LM_CHOICE ? json_string_value(json_object_get(o, "context")) : item;
        const char *continuation = kind == LM_CHOICE ? item : json_string_value(json_object_get(o, "continuation"));
        lm_pair p = {0};
        rc = lm_pair_encode(tok, context, continuation, em->cap, &p, e);
        if (rc) xd_wrap(e, "%s %zu", kind == LM_CHOICE ? "choice" : "context", c);
        double norm = kind == LM_CHOICE ? choice_chars(item) : 1;
        for (int k = 0; k < 2 && rc == 0; k++) {
            double ll;
            bool greedy;
            rc = lm_pair_score(em, k, &p, &ll, &greedy, e);
            if (ll > best[k]) best[k] = ll, arg[k] = (int)c;
            if (ll / norm > best_norm[k]) best_norm[k] = ll / norm, arg_norm[k] = (int)c;
        }
        free(p.ids);
    }
    for (int k = 0; k < 2; k++) correct[k] = arg[k] == label, correct_norm[k] = arg_norm[k] == label;
    return rc;
}

/* A task file: every line one item of one kind ({"context", "choices", "label"}: multiple choice;
 * {"context", "target"}: greedy match and target perplexity, as LAMBADA; {"contexts", "continuation",
 * "label"}: partial scoring, as Winogrande). */
static int eval_lm_task(eval_models *em, const char *path, json_t *tasks, xd_err *e) {
    char *text;
    size_t len;
    if (!em->m[0]->tokenizer) return xd_fail(e, "%s: the teacher has no tokenizer to score text with", path);
    if (xd_read_file(path, 256u << 20, &text, &len, e)) return -1;
    int rc = 0, line_no = 0, items = 0, correct[2] = {0, 0}, correct_norm[2] = {0, 0};
    double ll_sum[2] = {0, 0};
    lm_kind kind = LM_CHOICE;
    for (char *line = text; rc == 0 && line && *line; line_no++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *next = nl ? nl + 1 : NULL;
        if (strspn(line, " \t\r") == strlen(line)) {
            line = next;
            continue;
        }
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        lm_kind k = LM_CHOICE;
        if (!json_is_object(o) || lm_item_kind(o, &k))
            rc = xd_fail(e, "%s line %d: expected {\"context\", \"choices\": [2+ strings], \"label\": index}, "
                            "{\"context\", \"target\"} or {\"contexts\": [2+ strings], \"continuation\", \"label\": index}",
                         path, line_no + 1);
        else if (items > 0 && k != kind)
            rc = xd_fail(e, "%s line %d: a %s item in a file of %s items", path, line_no + 1, lm_kind_name[k],
                         lm_kind_name[kind]);
        bool ok[2], ok_norm[2];
        double ll[2] = {0, 0};
        if (rc == 0) {
            kind = k;
            rc = lm_item(em, o, kind, ok, ok_norm, ll, e);
            if (rc) xd_wrap(e, "%s line %d", path, line_no + 1);
        }
        if (rc == 0) {
            for (int m = 0; m < 2; m++) correct[m] += ok[m], correct_norm[m] += ok_norm[m], ll_sum[m] += ll[m];
            items++;
        }
        json_decref(o);
        line = next;
    }
    free(text);
    if (rc == 0 && items == 0) rc = xd_fail(e, "%s: no items", path);
    if (rc) return -1;
    const char *slash = strrchr(path, '/');
    char name[300];
    snprintf(name, sizeof name, "%s/%s", lm_kind_prefix[kind], slash ? slash + 1 : path);
    char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".jsonl")) *dot = 0;
    double ta = (double)correct[0] / items, sa = (double)correct[1] / items;
    json_t *task = json_pack("{s:s, s:s, s:i, s:f, s:f}", "task", name, "kind", lm_kind_name[kind], "items", items,
                             "teacher_acc", ta, "student_acc", sa);
    double ts = ta, ss = sa; /* the task's score: acc_norm for multiple choice, else acc */
    if (kind == LM_CHOICE) {
        ts = (double)correct_norm[0] / items, ss = (double)correct_norm[1] / items;
        json_object_set_new(task, "teacher_acc_norm", json_real(ts));
        json_object_set_new(task, "student_acc_norm", json_real(ss));
    } else if (kind == LM_TARGET) { /* lm-evaluation-harness's: exp(-mean over items of the target's log-likelihood) */
        json_object_set_new(task, "teacher_ppl", json_real(exp(-ll_sum[0] / items)));
        json_object_set_new(task, "student_ppl", json_real(exp(-ll_sum[1] / items)));
    }
    json_object_set_new(task, "teacher", json_real(ts));
    json_object_set_new(task, "student", json_real(ss));
    /* JSON has no infinity: a student that scores where the teacher scored 0 has no ratio */
    json_object_set_new(task, "recovery", ts > 0 ? json_real(ss / ts) : ss > 0 ? json_null() : json_real(1.0));
    json_array_append_new(tasks, task);
    fprintf(stderr, "[eval] %-28s teacher acc %.3f", name, ta);
    if (kind == LM_CHOICE) fprintf(stderr, " / acc_norm %.3f", ts);
    if (kind == LM_TARGET) fprintf(stderr, " / ppl %.3f", exp(-ll_sum[0] / items));
    fprintf(stderr, "  student acc %.3f", sa);
    if (kind == LM_CHOICE) fprintf(stderr, " / acc_norm %.3f", ss);
    if (kind == LM_TARGET) fprintf(stderr, " / ppl %.3f", exp(-ll_sum[1] / items));
    fprintf(stderr, " (%d items)\n", items);
    return 0;
}

/* The pass key's context lengths: "auto" (2, 4 and 8 windows, at least 256 tokens each: the prompt
 * around the filler takes about 80), "none", or a comma list. */
static int passkey_lengths(const char *spec, const model_config *student, int max_positions, int *out, xd_err *e) {
    int n = 0;
    if (!strcmp(spec, "none")) return 0;
    if (!strcmp(spec, "auto")) {
        for (int f = 2; f <= 8; f *= 2) {
            int L = student->window * f < 256 ? 256 : student->window * f;
            if (L > max_positions) L = max_positions;
            if (n == 0 || out[n - 1] != L) out[n++] = L;
        }
        return n;
    }
    for (const char *p = spec; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 64 || v > max_positions || n == PASSKEY_MAX_LENGTHS)
            return xd_fail(e, "passkey \"%s\": expected auto, none or up to %d lengths like 1024,2048 (each 64..%d, the "
                              "teacher's longest context)", spec, PASSKEY_MAX_LENGTHS, max_positions);
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

/* Whether C_alpha counts a task: "auto" every task but the in-domain perplexities (the student was
 * fine-tuned on that text, so its score there says nothing about keeping the teacher's quality),
 * "all", or a comma list of names and prefixes ending in '/'. */
static bool task_scored(const char *spec, json_t *task) {
    const char *name = json_string_value(json_object_get(task, "task"));
    if (!strcmp(spec, "all")) return true;
    if (!strcmp(spec, "auto")) return !json_is_true(json_object_get(task, "in_domain"));
    size_t nl = strlen(name);
    for (const char *p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len && ((len == nl && !strncmp(p, name, len)) || (p[len - 1] == '/' && len < nl && !strncmp(p, name, len))))
            return true;
        p += len + (comma != NULL);
    }
    return false;
}

/* The window-only student: the student's weights with every output gate shut (w_o = 0, b_o far
 * below zero, so o = sigmoid(b_o) is 0 in float), i.e. y = the sliding-window branch alone. */
static int window_only_student(const char *student, model_transformer *w, xd_err *e) {
    if (model_transformer_load(student, w, e)) return -1;
    int H = w->cfg.n_heads, d = w->cfg.head_dim;
    for (int l = 0; l < w->cfg.n_layers; l++) {
        const model_layer_offsets *o = &w->layout.layers[l];
        memset(w->params + o->ogate_w, 0, sizeof(float) * (size_t)H * 3 * d);
        for (int h = 0; h < H; h++) w->params[o->ogate_b + h] = -1e4f;
    }
    return 0;
}

int stage_eval(int argc, char **argv) {
    xd_err e = {{0}};
    char *teacher_path = NULL, *student_path = NULL, *out = NULL, *device = NULL, *passkey = NULL, *score = NULL;
    cfg_sources data = {0}, general = {0}, mc = {0};
    long seq_len = 0, max_tokens = 0, samples = 0, seed = 0;
    bool window_only = true;
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &teacher_path, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"student", CFG_STRING, &student_path, NULL, "the student to evaluate (a model directory)", 0, 0},
        {"out", CFG_STRING, &out, NULL, "where to write the JSON report", 0, 0},
        {"data", CFG_SOURCES, &data, "",
         "the training domains' token shard directories: an in-domain perplexity task each (val split)", 0, 0},
        {"general", CFG_SOURCES, &general, "",
         "held-out general text (token shard directories, val split): perplexity, KL and top-1 agreement with the "
         "teacher, by position",
         0, 0},
        {"tasks", CFG_SOURCES, &mc, "",
         "task .jsonl files: multiple choice, target (LAMBADA-style) or partial (Winogrande-style); weights ignored", 0,
         0},
        {"seq_len", CFG_INT, &seq_len, "256", "tokens per perplexity window (longer than the window to see past it)", 2,
         1 << 20},
        {"max_tokens", CFG_INT, &max_tokens, "8192", "validation tokens per source at most", 1, 1e12},
        {"passkey", CFG_STRING, &passkey, "auto",
         "pass-key context lengths: auto (2, 4, 8 windows, at least 256), none, or a list like 1024,2048,4096", 0, 0},
        {"passkey_samples", CFG_INT, &samples, "8", "pass keys per length, at depths spread evenly", 1, 1000},
        {"seed", CFG_INT, &seed, "1", "the pass keys' random seed", 0, 1e15},
        {"window_only", CFG_BOOL, &window_only, "true",
         "also evaluate the window-only student (output gates shut) on the long-context tasks", 0, 0},
        {"score", CFG_STRING, &score, "auto",
         "the tasks C_alpha counts: auto (all but in-domain perplexity), all, or names and prefixes like mc/,passkey/", 0,
         0},
        {"device", CFG_STRING, &device, "cpu", "cpu, cuda or cuda:N: where the models run", 0, 0},
    };
    int n_fields = (int)(sizeof fields / sizeof fields[0]);
    int cli = cfg_stage_cli("eval", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    model_transformer teacher = {0}, student = {0}, window = {0};
    eval_models em = {{&teacher, &student, NULL}, {0}, NULL, {NULL, NULL}, 0, -1, {NULL, NULL, NULL}, 0, NULL};
    json_t *tasks = json_array(), *skipped = NULL;
    int lengths[PASSKEY_MAX_LENGTHS], n_lengths = 0, K = window_only ? EVAL_MODELS : EVAL_WINDOW;
    int rc = trainer_parse_device(device, &em.cuda, &e);
    if (rc) goto done;
    if ((rc = model_transformer_load(teacher_path, &teacher, &e))) goto done;
    if ((rc = model_transformer_load(student_path, &student, &e))) goto done;
    if ((rc = stage_check_lineage(&teacher, &student, false, &e))) goto done;
    if ((n_lengths = passkey_lengths(passkey, &student.cfg, teacher.cfg.max_positions, lengths, &e)) < 0 ||
        passkey_check_lengths(teacher.tokenizer, lengths, n_lengths, &e)) {
        rc = -1;
        goto done;
    }
    if (window_only) {
        if ((rc = window_only_student(student_path, &window, &e))) goto done;
        em.m[EVAL_WINDOW] = &window;
    }
    em.cap = (int)(seq_len > 2048 ? seq_len : 2048);
    for (int i = 0; i < n_lengths; i++)
        if (lengths[i] > em.cap) em.cap = lengths[i];
    size_t V = (size_t)teacher.cfg.vocab;
    em.hidden = xd_malloc(sizeof(float) * (size_t)em.cap * teacher.cfg.hidden, &e);
    em.logits[0] = em.hidden ? xd_malloc(sizeof(float) * (size_t)em.cap * V, &e) : NULL;
    em.logits[1] = em.logits[0] ? xd_malloc(sizeof(float) * (size_t)em.cap * V, &e) : NULL;
    em.padded = em.logits[1] ? xd_malloc(sizeof(int) * (size_t)em.cap, &e) : NULL;
    if (!em.padded || (em.cuda < 0 && model_kv_cache_init(&em.cache, &teacher.cfg, em.cap, &e))) {
        rc = -1;
        goto done;
    }
    skipped = json_array();
    for (int g = 0; g < 2 && rc == 0; g++) {
        const cfg_sources *src = g == 0 ? &data : &general;
        for (int i = 0; i < src->count && rc == 0; i++) {
            rc = eval_domain(&em, src->items[i].path, g == 0, g == 0 ? EVAL_WINDOW : K, (int)seq_len, max_tokens, tasks,
                             &e);
            if (rc == 1) {
                json_array_append_new(skipped, json_string(src->items[i].path));
                rc = 0;
            }
        }
    }
    if (rc == 0 && json_array_size(tasks) == 0 && mc.count == 0 && n_lengths == 0)
        rc = xd_fail(&e, "nothing to evaluate: no data source has validation tokens, no tasks are given, passkey is none");
    for (int i = 0; i < mc.count && rc == 0; i++) rc = eval_lm_task(&em, mc.items[i].path, tasks, &e);
    if (rc == 0 && n_lengths) rc = eval_passkey(&em, K, lengths, n_lengths, (int)samples, seed, tasks, &e);
    if (rc) goto done;

    size_t nt = json_array_size(tasks);
    json_t *scored = json_array();
    for (size_t i = 0; i < nt; i++)
        if (task_scored(score, json_array_get(tasks, i)))
            json_array_append(scored, json_object_get(json_array_get(tasks, i), "task"));
    size_t ns = json_array_size(scored);
    bool auto_score = !strcmp(score, "auto");
    if (ns == 0 && !auto_score) {
        json_decref(scored);
        rc = xd_fail(&e, "score \"%s\" names none of the %zu tasks evaluated: no C_alpha to compute", score, nt);
        goto done;
    }
    json_t *curve = json_array();
    json_t *alpha_star = json_null();
    for (int a = 0; a < N_ALPHAS && ns > 0; a++) {
        int wins = 0;
        for (size_t i = 0; i < nt; i++) {
            json_t *t = json_array_get(tasks, i);
            if (!task_scored(score, t)) continue;
            double S = json_number_value(json_object_get(t, "student"));
            double Tv = json_number_value(json_object_get(t, "teacher"));
            wins += S >= (1 - alphas[a]) * Tv;
        }
        double c = (double)wins / (double)ns;
        json_array_append_new(curve, json_pack("{s:f, s:f}", "alpha", alphas[a], "c", c));
        if (json_is_null(alpha_star) && c >= 0.5) {
            json_decref(alpha_star);
            alpha_star = json_real(alphas[a]);
        }
    }
    bool lossless = ns > 0 && json_real_value(json_object_get(json_array_get(curve, 0), "c")) >= 0.5;
    char star[64];
    if (json_is_null(alpha_star)) snprintf(star, sizeof star, "none (C_alpha < 0.5 up to 0.2)");
    else snprintf(star, sizeof star, "%g", json_real_value(alpha_star));
    if (ns == 0) { /* only in-domain perplexity: nothing says whether the teacher's quality is kept */
        printf("eval: %zu tasks, all in-domain perplexity: no C_alpha (score: all would count them; general, "
               "tasks or passkey give tasks it counts)\n", nt);
    } else {
        printf("eval: %zu tasks; C_alpha over %zu of them (%s):", nt, ns,
               auto_score ? "all but the in-domain perplexities" : score);
        for (int a = 0; a < N_ALPHAS; a++)
            printf(" %g:%.2f", alphas[a], json_real_value(json_object_get(json_array_get(curve, a), "c")));
        printf(";  alpha* = %s;  lossless (C_0 >= 0.5): %s\n", star, lossless ? "yes" : "no");
    }
    json_t *report = json_pack("{s:s, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o}", "teacher", teacher_path, "student",
                               student_path, "tasks", tasks, "score", score, "c_alpha_tasks", scored, "c_alpha", curve,
                               "alpha_star", alpha_star, "lossless", ns ? json_boolean(lossless) : json_null(),
                               "skipped_sources", skipped);
    skipped = NULL;
    tasks = NULL;
    char *text = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(report);
    rc = text ? xd_write_file_atomic(out, text, strlen(text), &e) : xd_fail(&e, "out of memory");
    free(text);
    if (rc == 0) printf("eval report: %s\n", out);
done:
    if (rc) fprintf(stderr, "xtrain eval: %s\n", e.msg);
    json_decref(tasks);
    json_decref(skipped);
    free(em.hidden), free(em.logits[0]), free(em.logits[1]), free(em.padded);
#ifdef XD_HAVE_CUDA
    for (int i = 0; i < EVAL_MODELS; i++) gpu_net_close(em.gpu[i]);
#endif
    model_kv_cache_free(&em.cache);
    model_transformer_free(&window);
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
