/* xtrain eval: stage 5 (DESIGN 1.2). Teacher and student on the same tasks:
 *  - held-out perplexity per domain (each data source's val split), and the student's next-token
 *    top-1 agreement with the teacher there;
 *  - multiple-choice tasks in .jsonl ({"context", "choices", "label"}), each choice scored by the
 *    log-likelihood of its tokens after the context: acc (highest sum) and acc_norm (highest sum per
 *    byte of the choice), as lm-evaluation-harness does.
 * The report: per task teacher and student scores and recovery S/T; the win-and-tie rate C_alpha
 * over the task set (perplexity enters as exp(-nll), a multiple-choice task as its acc_norm) for
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

typedef struct eval_models {
    model_transformer *m[2]; /* teacher, student */
    model_kv_cache cache;
    float *hidden, *logits[2];
    int cap; /* longest sequence */
    int cuda; /* the device, -1 for the CPU */
    void *gpu[2]; /* on a GPU: a gpu_net of each model for one sequence of gpu_T tokens */
    int gpu_T, *padded;
} eval_models;

#ifdef XD_HAVE_CUDA
/* Logits [n, V] of model k on the GPU: the sequence padded to the nets' length (both models are
 * causal, so the padding changes none of the first n rows), the nets reopened longer (a power of
 * two) when a sequence does not fit. */
static int gpu_sequence_logits(eval_models *em, int k, const int *ids, int n, float *logits, xd_err *e) {
    if (n > em->gpu_T) {
        int T = 64;
        while (T < n) T *= 2;
        if (T > em->cap) T = em->cap;
        for (int i = 0; i < 2; i++) {
            gpu_net_close(em->gpu[i]);
            em->gpu[i] = NULL;
        }
        em->gpu_T = 0;
        for (int i = 0; i < 2; i++) {
            gpu_net *g = NULL;
            if (gpu_net_open(&g, em->m[i], em->cuda, 1, T, GPU_LOGITS, 0, -1, e)) return -1;
            em->gpu[i] = g;
        }
        em->gpu_T = T;
        fprintf(stderr, "[eval] on %s: teacher and student for sequences of up to %d tokens\n",
                gpu_net_device(em->gpu[0]), T);
    }
    memcpy(em->padded, ids, sizeof(int) * (size_t)n);
    for (int t = n; t < em->gpu_T; t++) em->padded[t] = 0;
    gpu_net *g = em->gpu[k];
    if ((k == 0 ? gpu_teacher_forward : gpu_student_forward)(g, em->padded, e)) return -1;
    if (kern_cuda_copy(logits, gpu_net_logits(g), sizeof(float) * (size_t)n * em->m[k]->cfg.vocab, 1, NULL))
        return xd_fail(e, "gpu: logits: %s", kern_cuda_last_error());
    return 0;
}
#endif

/* Logits [n, V] of a sequence under model k (0 the teacher, 1 the student). */
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

/* One domain: a val pass over one source. */
static int eval_domain(eval_models *em, const char *dir, int T, long max_tokens, json_t *tasks,
                       xd_err *e) {
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
    snprintf(name, sizeof name, "ppl/%s", d->domain[0] ? d->domain : (slash && slash[1] ? slash + 1 : dir));
    int V = em->m[0]->cfg.vocab, rc = 0;
    int *in = xd_malloc(sizeof(int) * (size_t)T * 2, e), *tg = in ? in + T : NULL;
    double nll[2] = {0, 0};
    long count = 0, agree = 0;
    while (rc == 0 && in && count < max_tokens) {
        int r = model_data_next(l, in, tg, NULL, e);
        if (r == 1) break;
        if (r < 0) {
            rc = -1;
            break;
        }
        for (int k = 0; k < 2 && rc == 0; k++)
            rc = sequence_logits(em, k, in, T, em->logits[k], e);
        for (int t = 0; rc == 0 && t < T && count < max_tokens; t++) {
            if (tg[t] < 0) continue;
            for (int k = 0; k < 2; k++) nll[k] -= log_prob(em->logits[k] + (size_t)t * V, V, tg[t]);
            int a0 = 0, a1 = 0;
            for (int v = 1; v < V; v++) {
                if (em->logits[0][(size_t)t * V + v] > em->logits[0][(size_t)t * V + a0]) a0 = v;
                if (em->logits[1][(size_t)t * V + v] > em->logits[1][(size_t)t * V + a1]) a1 = v;
            }
            agree += a0 == a1;
            count++;
        }
    }
    if (rc == 0 && count == 0) rc = xd_fail(e, "%s: no validation tokens to evaluate", dir);
    if (rc == 0) {
        double t_ppl = exp(nll[0] / count), s_ppl = exp(nll[1] / count);
        json_t *task = json_pack("{s:s, s:s, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "task", name, "kind",
                                 "perplexity", "tokens", (json_int_t)count, "teacher_ppl", t_ppl, "student_ppl",
                                 s_ppl, "teacher", 1.0 / t_ppl, "student", 1.0 / s_ppl, "recovery",
                                 t_ppl / s_ppl, "top1_agreement", (double)agree / count);
        json_array_append_new(tasks, task);
        fprintf(stderr, "[eval] %-28s teacher ppl %8.3f  student ppl %8.3f  top-1 agreement %.3f\n", name, t_ppl,
                s_ppl, (double)agree / count);
    }
    free(in);
    model_data_loader_free(l);
    return rc;
}

/* One multiple-choice .jsonl file. */
static int eval_choices(eval_models *em, const char *path, json_t *tasks, xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(path, 256u << 20, &text, &len, e)) return -1;
    const model_tokenizer *tok = em->m[0]->tokenizer;
    if (!tok) {
        free(text);
        return xd_fail(e, "%s: the teacher has no tokenizer to score text with", path);
    }
    int V = em->m[0]->cfg.vocab, rc = 0, line_no = 0, items = 0;
    int correct[2] = {0, 0}, correct_norm[2] = {0, 0};
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
        json_t *ctx = o ? json_object_get(o, "context") : NULL, *ch = o ? json_object_get(o, "choices") : NULL;
        json_t *lab = o ? json_object_get(o, "label") : NULL;
        if (!json_is_object(o) || !json_is_string(ctx) || !json_is_array(ch) || json_array_size(ch) < 2 ||
            !json_is_integer(lab) || json_integer_value(lab) < 0 ||
            (size_t)json_integer_value(lab) >= json_array_size(ch)) {
            rc = xd_fail(e, "%s line %d: expected {\"context\": string, \"choices\": [2+ strings], \"label\": index}",
                         path, line_no + 1);
            json_decref(o);
            break;
        }
        double best[2] = {-INFINITY, -INFINITY}, best_norm[2] = {-INFINITY, -INFINITY};
        int arg[2] = {0, 0}, arg_norm[2] = {0, 0};
        int *cids = NULL;
        size_t nc = 0;
        const char *cs = json_string_value(ctx);
        rc = model_tokenizer_encode(tok, cs, strlen(cs), model_tokenizer_adds_bos(tok), false, &cids, &nc, e);
        for (size_t c = 0; rc == 0 && c < json_array_size(ch); c++) {
            json_t *cj = json_array_get(ch, c);
            if (!json_is_string(cj)) {
                rc = xd_fail(e, "%s line %d: choice %zu is not a string", path, line_no + 1, c);
                break;
            }
            const char *choice = json_string_value(cj);
            int *all = NULL;
            size_t na = 0;
            /* the choice's tokens are those of context+choice past the context's own */
            size_t clen = strlen(cs), chlen = strlen(choice);
            char *joined = xd_malloc(clen + chlen + 1, e);
            if (!joined) {
                rc = -1;
                break;
            }
            memcpy(joined, cs, clen);
            memcpy(joined + clen, choice, chlen + 1);
            rc = model_tokenizer_encode(tok, joined, clen + chlen, model_tokenizer_adds_bos(tok), false, &all, &na, e);
            free(joined);
            size_t start = nc;
            while (rc == 0 && start > 0 && (start > na || memcmp(all, cids, sizeof(int) * start) != 0)) start--;
            if (rc == 0 && (na <= start || start == 0 || na > (size_t)em->cap))
                rc = xd_fail(e, "%s line %d: choice %zu is empty or the item is longer than %d tokens", path,
                             line_no + 1, c, em->cap);
            for (int k = 0; k < 2 && rc == 0; k++) {
                rc = sequence_logits(em, k, all, (int)na, em->logits[k], e);
                double ll = 0;
                for (size_t t = start; rc == 0 && t < na; t++)
                    ll += log_prob(em->logits[k] + (t - 1) * (size_t)V, V, all[t]);
                double norm = ll / (double)(chlen ? chlen : 1);
                if (ll > best[k]) best[k] = ll, arg[k] = (int)c;
                if (norm > best_norm[k]) best_norm[k] = norm, arg_norm[k] = (int)c;
            }
            free(all);
        }
        free(cids);
        if (rc == 0) {
            int label = (int)json_integer_value(lab);
            for (int k = 0; k < 2; k++) {
                correct[k] += arg[k] == label;
                correct_norm[k] += arg_norm[k] == label;
            }
            items++;
        }
        json_decref(o);
        line = next;
    }
    free(text);
    if (rc == 0 && items == 0) rc = xd_fail(e, "%s: no items", path);
    if (rc == 0) {
        const char *slash = strrchr(path, '/');
        char name[300];
        snprintf(name, sizeof name, "mc/%s", slash ? slash + 1 : path);
        char *dot = strrchr(name, '.');
        if (dot && !strcmp(dot, ".jsonl")) *dot = 0;
        double ta = (double)correct[0] / items, sa = (double)correct[1] / items;
        double tn = (double)correct_norm[0] / items, sn = (double)correct_norm[1] / items;
        json_t *task = json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "task", name, "kind",
                                 "multiple_choice", "items", items, "teacher_acc", ta, "student_acc", sa,
                                 "teacher_acc_norm", tn, "student_acc_norm", sn, "teacher", tn, "student", sn,
                                 "recovery", tn > 0 ? sn / tn : (sn > 0 ? INFINITY : 1.0));
        json_array_append_new(tasks, task);
        fprintf(stderr, "[eval] %-28s teacher acc %.3f / acc_norm %.3f  student acc %.3f / acc_norm %.3f (%d items)\n",
                name, ta, tn, sa, sn, items);
    }
    return rc;
}

int stage_eval(int argc, char **argv) {
    xd_err e = {{0}};
    char *teacher_path = NULL, *student_path = NULL, *out = NULL, *device = NULL;
    cfg_sources data = {0}, mc = {0};
    long seq_len = 0, max_tokens = 0;
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &teacher_path, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"student", CFG_STRING, &student_path, NULL, "the student to evaluate (a model directory)", 0, 0},
        {"out", CFG_STRING, &out, NULL, "where to write the JSON report", 0, 0},
        {"data", CFG_SOURCES, &data, NULL, "token shard directories: one perplexity task each (val split)", 0, 0},
        {"tasks", CFG_SOURCES, &mc, "", "multiple-choice .jsonl files (optional; weights ignored)", 0, 0},
        {"seq_len", CFG_INT, &seq_len, "256", "tokens per perplexity window", 2, 1 << 20},
        {"max_tokens", CFG_INT, &max_tokens, "8192", "validation tokens per domain at most", 1, 1e12},
        {"device", CFG_STRING, &device, "cpu", "cpu, cuda or cuda:N: where both models run", 0, 0},
    };
    int n_fields = (int)(sizeof fields / sizeof fields[0]);
    int cli = cfg_stage_cli("eval", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    model_transformer teacher = {0}, student = {0};
    eval_models em = {{&teacher, &student}, {0}, NULL, {NULL, NULL}, 0, -1, {NULL, NULL}, 0, NULL};
    json_t *tasks = json_array(), *skipped = NULL;
    int rc = trainer_parse_device(device, &em.cuda, &e);
    if (rc) goto done;
    if ((rc = model_transformer_load(teacher_path, &teacher, &e))) goto done;
    if ((rc = model_transformer_load(student_path, &student, &e))) goto done;
    if ((rc = stage_check_lineage(&teacher, &student, false, &e))) goto done;
    em.cap = (int)(seq_len > 2048 ? seq_len : 2048);
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
    for (int i = 0; i < data.count && rc == 0; i++) {
        rc = eval_domain(&em, data.items[i].path, (int)seq_len, max_tokens, tasks, &e);
        if (rc == 1) {
            json_array_append_new(skipped, json_string(data.items[i].path));
            rc = 0;
        }
    }
    if (rc == 0 && json_array_size(tasks) == 0 && mc.count == 0)
        rc = xd_fail(&e, "nothing to evaluate: no data source has validation tokens and no tasks are given");
    for (int i = 0; i < mc.count && rc == 0; i++) rc = eval_choices(&em, mc.items[i].path, tasks, &e);
    if (rc) goto done;

    size_t nt = json_array_size(tasks);
    json_t *curve = json_array();
    json_t *alpha_star = json_null();
    for (int a = 0; a < N_ALPHAS; a++) {
        int wins = 0;
        for (size_t i = 0; i < nt; i++) {
            json_t *t = json_array_get(tasks, i);
            double S = json_number_value(json_object_get(t, "student"));
            double Tv = json_number_value(json_object_get(t, "teacher"));
            wins += S >= (1 - alphas[a]) * Tv;
        }
        double c = (double)wins / (double)nt;
        json_array_append_new(curve, json_pack("{s:f, s:f}", "alpha", alphas[a], "c", c));
        if (json_is_null(alpha_star) && c >= 0.5) {
            json_decref(alpha_star);
            alpha_star = json_real(alphas[a]);
        }
    }
    bool lossless = json_real_value(json_object_get(json_array_get(curve, 0), "c")) >= 0.5;
    char star[64];
    if (json_is_null(alpha_star)) snprintf(star, sizeof star, "none (C_alpha < 0.5 up to 0.2)");
    else snprintf(star, sizeof star, "%g", json_real_value(alpha_star));
    printf("eval: %zu tasks;  C_alpha:", nt);
    for (int a = 0; a < N_ALPHAS; a++)
        printf(" %g:%.2f", alphas[a], json_real_value(json_object_get(json_array_get(curve, a), "c")));
    printf(";  alpha* = %s;  lossless (C_0 >= 0.5): %s\n", star, lossless ? "yes" : "no");
    json_t *report = json_pack("{s:s, s:s, s:o, s:o, s:o, s:b, s:o}", "teacher", teacher_path, "student",
                               student_path, "tasks", tasks, "c_alpha", curve, "alpha_star", alpha_star, "lossless",
                               lossless, "skipped_sources", skipped);
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
    gpu_net_close(em.gpu[0]);
    gpu_net_close(em.gpu[1]);
#endif
    model_kv_cache_free(&em.cache);
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
