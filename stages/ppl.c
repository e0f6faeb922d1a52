/* xtrain ppl: perplexity of a text or of token ids under a model. */
#include "args.h"
#include "stages.h"
#include "trainer.h"
#include "kernels/kernels.h"
#include "model/model.h"
#ifdef XD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PPL_MAX_INPUT_BYTES (256u << 20)
#define PPL_BLOCK 256 /* tokens per forward call: bounds the logits and score buffers */

/* Whitespace-separated non-negative integers. */
static int read_ids_file(const char *path, int vocab, int **ids, size_t *n, xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(path, PPL_MAX_INPUT_BYTES, &text, &len, e)) return -1;
    size_t cap = 1024, count = 0;
    int *out = xd_malloc(sizeof(int) * cap, e);
    if (!out) {
        free(text);
        return -1;
    }
    char *p = text;
    int rc = 0;
    while (rc == 0) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ' ' && *end != '\n' && *end != '\t' && *end != '\r')) {
            rc = xd_fail(e, "%s: token %zu is not an integer", path, count + 1);
            break;
        }
        if (v < 0 || v >= vocab) {
            rc = xd_fail(e, "%s: token %zu = %ld is outside the vocabulary (0..%d)", path, count + 1,
                         v, vocab - 1);
            break;
        }
        if (count == cap) {
            cap *= 2;
            int *grown = realloc(out, sizeof(int) * cap);
            if (!grown) {
                rc = xd_fail(e, "out of memory");
                break;
            }
            out = grown;
        }
        out[count++] = (int)v;
        p = end;
    }
    free(text);
    if (rc) {
        free(out);
        return -1;
    }
    *ids = out;
    *n = count;
    return 0;
}

static int read_text_tokens(const char *path, const model_transformer *m, int **ids, size_t *n,
                            xd_err *e) {
    if (!m->tokenizer)
        return xd_fail(e, "%s has no tokenizer: use --ids-file", m->source);
    char *text;
    size_t len;
    if (xd_read_file(path, PPL_MAX_INPUT_BYTES, &text, &len, e)) return -1;
    int rc = model_tokenizer_encode(m->tokenizer, text, len, model_tokenizer_adds_bos(m->tokenizer),
                                    false, ids, n, e);
    free(text);
    return rc ? xd_wrap(e, "%s", path) : 0;
}

int stage_ppl(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *ids_path = NULL, *dump_path = NULL, *device = "cpu";
    int ctx = 0;
    bool json = false, recurrent = false;
    arg_spec specs[] = {
        {"--model", ARG_STRING, &model_path, "HF model directory or .gguf file", false},
        {"--text", ARG_STRING, &text_path, "UTF-8 text file to score", false},
        {"--ids-file", ARG_STRING, &ids_path, "whitespace-separated token ids to score", false},
        {"--ctx", ARG_INT, &ctx, "window length (default: whole input up to the model maximum)", false},
        {"--dump-logits", ARG_STRING, &dump_path, "write the first window's logits (float32 LE [n, vocab])", false},
        {"--json", ARG_FLAG, &json, "print one JSON object instead of the summary line", false},
        {"--recurrent", ARG_FLAG, &recurrent, "student only: one token at a time in step form (constant memory)", false},
        {"--device", ARG_STRING, &device, "cpu (default), cuda or cuda:N", false},
    };
    int n_specs = sizeof specs / sizeof specs[0];
    const char *usage = "xtrain ppl --model PATH (--text FILE | --ids-file FILE) [--ctx N] "
                        "[--dump-logits FILE] [--json] [--recurrent] [--device cpu|cuda[:N]]";
    xd_err e = {{0}};
    int prc = args_parse(specs, n_specs, argc, argv, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain ppl: %s\n", e.msg);
        args_usage(usage, specs, n_specs);
        return prc < 0 ? 2 : 0;
    }
    if (!model_path || (!text_path == !ids_path)) {
        fprintf(stderr, "xtrain ppl: need --model and exactly one of --text or --ids-file\n");
        args_usage(usage, specs, n_specs);
        return 2;
    }
    if (specs[3].set && ctx < 2) {
        fprintf(stderr, "xtrain ppl: --ctx must be at least 2\n");
        return 2;
    }

    int cuda = -1;
    if (trainer_parse_device(device, &cuda, &e)) {
        fprintf(stderr, "xtrain ppl: %s\n", e.msg);
        return 2;
    }
    model_transformer m;
    double t0 = xd_now();
    if (model_transformer_load(model_path, &m, &e)) {
        fprintf(stderr, "xtrain ppl: %s\n", e.msg);
        return 1;
    }
    double t_load = xd_now() - t0;
    if (recurrent && !m.cfg.student) {
        fprintf(stderr, "xtrain ppl: --recurrent needs a student model; %s is a %s Transformer\n",
                model_path, m.cfg.model_type);
        model_transformer_free(&m);
        return 2;
    }
    int *ids = NULL;
    size_t n = 0;
    int rc = ids_path ? read_ids_file(ids_path, m.cfg.vocab, &ids, &n, &e)
                      : read_text_tokens(text_path, &m, &ids, &n, &e);
    if (rc == 0 && n < 2) rc = xd_fail(&e, "the input has %zu token(s); perplexity needs at least 2", n);
    if (rc) {
        fprintf(stderr, "xtrain ppl: %s\n", e.msg);
        model_transformer_free(&m);
        free(ids);
        return 1;
    }
    if (ctx == 0) ctx = n < (size_t)m.cfg.max_positions ? (int)n : m.cfg.max_positions;
    if (ctx > m.cfg.max_positions) {
        fprintf(stderr, "xtrain ppl: --ctx %d exceeds the model's maximum of %d positions\n", ctx,
                m.cfg.max_positions);
        model_transformer_free(&m);
        free(ids);
        return 2;
    }

    FILE *dump = NULL;
    if (dump_path && !(dump = fopen(dump_path, "wb"))) {
        fprintf(stderr, "xtrain ppl: %s: cannot create: %s\n", dump_path, strerror(errno));
        model_transformer_free(&m);
        free(ids);
        return 1;
    }
    /* Three ways to get a window's logits, PPL_BLOCK rows at a time: the teacher through its KV
     * cache; a student chunkwise (hidden states of the whole window, then the LM head by
     * blocks); a student in step form, one token at a time in constant memory (--recurrent).
     * On a GPU: a whole window at once (padded to ctx: the models are causal), or the step form. */
    model_kv_cache cache = {0};
    model_student_state state = {0};
    int V = m.cfg.vocab, D = m.cfg.hidden;
    float *logits = NULL, *hidden = NULL;
    int *padded = NULL;
#ifdef XD_HAVE_CUDA
    gpu_net *gnet = NULL;
    gpu_gen *ggen = NULL;
    if (cuda >= 0) {
        if (recurrent) rc = gpu_gen_open(&ggen, &m, cuda, 1, ctx, &e);
        else if (!(padded = xd_calloc((size_t)ctx, sizeof(int), &e))) rc = -1;
        else rc = gpu_net_open(&gnet, &m, cuda, 1, ctx, GPU_LOGITS, 0, -1, &e);
        if (rc == 0 && !json)
            fprintf(stderr, "[ppl] on %s\n", recurrent ? gpu_gen_device(ggen) : gpu_net_device(gnet));
    } else
#endif
    if (!m.cfg.student) rc = model_kv_cache_init(&cache, &m.cfg, ctx, &e);
    else if (recurrent) rc = model_student_state_init(&state, &m.cfg, &e);
    else if (!(hidden = xd_malloc(sizeof(float) * (size_t)ctx * D, &e))) rc = -1;
    if (rc == 0 && !(logits = xd_malloc(sizeof(float) * PPL_BLOCK * (size_t)V, &e))) rc = -1;

    double nll = 0, t_start = xd_now(), last_report = t_start;
    size_t predicted = 0, done = 0;
    int windows = 0;
    bool tty = isatty(STDERR_FILENO);
    for (size_t w0 = 0; rc == 0 && w0 + 1 < n; w0 += (size_t)ctx) {
        size_t wlen = n - w0 < (size_t)ctx ? n - w0 : (size_t)ctx;
        if (wlen < 2) break; /* a lone trailing token predicts nothing */
        const int *w = ids + w0;
        windows++;
        cache.length = 0;
        if (cuda >= 0) {
#ifdef XD_HAVE_CUDA
            if (recurrent) rc = gpu_gen_reset(ggen, &e);
            else {
                memcpy(padded, w, sizeof(int) * wlen);
                memset(padded + wlen, 0, sizeof(int) * ((size_t)ctx - wlen));
                rc = (m.cfg.student ? gpu_student_forward : gpu_teacher_forward)(gnet, padded, &e);
            }
#endif
        } else if (recurrent) {
            model_student_state_free(&state);
            rc = model_student_state_init(&state, &m.cfg, &e);
        } else if (m.cfg.student) {
            rc = model_student_hidden(&m, w, (int)wlen, hidden, &e);
        }
        for (size_t b = 0; rc == 0 && b < wlen; b += PPL_BLOCK) {
            int bl = (int)(wlen - b < PPL_BLOCK ? wlen - b : PPL_BLOCK);
            if (cuda >= 0) {
#ifdef XD_HAVE_CUDA
                if (recurrent)
                    for (int t = 0; rc == 0 && t < bl; t++) rc = gpu_gen_feed(ggen, w + b + t, 1, logits + (size_t)t * V, &e);
                else if (kern_cuda_copy(logits, gpu_net_logits(gnet) + b * (size_t)V, sizeof(float) * (size_t)bl * V, 1,
                                        NULL))
                    rc = xd_fail(&e, "gpu: logits: %s", kern_cuda_last_error());
#endif
            } else if (!m.cfg.student) {
                rc = model_transformer_forward(&m, &cache, w + b, bl, logits, true, &e);
            } else if (recurrent) {
                for (int t = 0; rc == 0 && t < bl; t++)
                    rc = model_student_step(&m, &state, w[b + t], logits + (size_t)t * V, &e);
            } else {
                model_lm_head(&m, hidden + b * (size_t)D, bl, logits);
            }
            if (rc) break;
            if (dump && windows == 1 &&
                fwrite(logits, sizeof(float) * V, (size_t)bl, dump) != (size_t)bl) {
                rc = xd_fail(&e, "%s: write failed", dump_path);
                break;
            }
            for (int t = 0; t < bl; t++) {
                size_t pos = b + (size_t)t;
                if (pos + 1 >= wlen) break;
                nll += kern_cross_entropy_row(logits + (size_t)t * V, V, w[pos + 1]);
                predicted++;
            }
            done += (size_t)bl;
            double now = xd_now();
            if (tty && !json && now - last_report > 0.5) {
                double rate = done / (now - t_start);
                fprintf(stderr, "\r[ppl] %zu/%zu tokens  %.0f tok/s  ppl %.4f  ETA %.0fs   ", done, n,
                        rate, exp(nll / (double)(predicted ? predicted : 1)), (n - done) / rate);
                last_report = now;
            }
        }
    }
    if (tty && !json) fprintf(stderr, "\r%70s\r", "");
    if (dump && fclose(dump) != 0 && rc == 0) rc = xd_fail(&e, "%s: write failed", dump_path);
    double secs = xd_now() - t_start;
    if (rc == 0) {
        double mean = nll / (double)predicted, ppl = exp(mean);
        if (json) {
            printf("{\"ppl\": %.9g, \"nll\": %.9g, \"tokens\": %zu, \"predicted\": %zu, "
                   "\"windows\": %d, \"ctx\": %d, \"seconds\": %.3f, \"load_seconds\": %.3f, "
                   "\"tokens_per_second\": %.1f, \"mode\": \"%s\"}\n",
                   ppl, mean, done, predicted, windows, ctx, secs, t_load, done / secs,
                   !m.cfg.student ? "transformer" : recurrent ? "recurrent" : "chunkwise");
        } else {
            fprintf(stderr, "[ppl] %s: %zu tokens in %d window(s) of up to %d, %.2fs (%.1f tok/s)\n",
                    model_path, done, windows, ctx, secs, done / secs);
            printf("ppl %.6f tokens %zu\n", ppl, done);
        }
    } else {
        fprintf(stderr, "xtrain ppl: %s\n", e.msg);
    }
    free(logits);
    free(hidden);
    free(padded);
#ifdef XD_HAVE_CUDA
    gpu_net_close(gnet);
    gpu_gen_close(ggen);
#endif
    model_student_state_free(&state);
    model_kv_cache_free(&cache);
    model_transformer_free(&m);
    free(ids);
    return rc ? 1 : 0;
}
