/* xtrain generate: stream text from a model, greedy or sampled (temperature, top-p). */
#include "args.h"
#include "stages.h"
#include "trainer.h"
#include "kernels/kernels.h"
#include "model/model.h"
#ifdef XD_HAVE_CUDA
#include "model/gpu.h"
#endif

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct prob_index {
    float p;
    int id;
} prob_index;

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const prob_index *)a)->p, y = ((const prob_index *)b)->p;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Greedy for temperature 0; else softmax(logits / T) restricted to the smallest set of tokens
 * whose probability reaches top_p. */
static int sample_token(float *logits, int V, double temperature, double top_p, xd_rng *rng,
                        prob_index *scratch) {
    if (temperature <= 0) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) logits[i] = (float)(logits[i] / temperature);
    kern_softmax_rows(logits, 1, V);
    int n = V;
    for (int i = 0; i < V; i++) scratch[i] = (prob_index){logits[i], i};
    if (top_p < 1.0) {
        qsort(scratch, (size_t)V, sizeof *scratch, by_prob_desc);
        double cum = 0;
        for (n = 0; n < V; n++) {
            cum += scratch[n].p;
            if (cum >= top_p) {
                n++;
                break;
            }
        }
        if (n > V) n = V;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += scratch[i].p;
    double r = xd_rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += scratch[i].p;
        if (r < acc) return scratch[i].id;
    }
    return scratch[n - 1].id;
}

/* Where the context lives: on the CPU the teacher's KV cache or the student's step state, on a
 * GPU a gpu_gen holding either. */
typedef struct gen_ctx {
    const model_transformer *m;
    model_kv_cache cache;
    model_student_state state;
    void *gpu; /* gpu_gen, with the CUDA backend */
} gen_ctx;

/* Runs tokens through the model, leaving the logits of the last one: the teacher through its KV
 * cache, the student in step form (constant memory; a prompt chunkwise, then steps). */
static int feed(gen_ctx *g, const int *tokens, int n, float *logits, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (g->gpu) return gpu_gen_feed(g->gpu, tokens, n, logits, e);
#endif
    if (!g->m->cfg.student) return model_transformer_forward(g->m, &g->cache, tokens, n, logits, false, e);
    return model_student_prefill(g->m, &g->state, tokens, n, logits, e);
}

static double context_bytes(const gen_ctx *g) {
#ifdef XD_HAVE_CUDA
    if (g->gpu) return gpu_gen_state_bytes(g->gpu);
#endif
    const model_config *c = &g->m->cfg;
    return c->student ? (double)g->state.bytes
                      : 2.0 * sizeof(float) * c->n_layers * (double)g->cache.length * c->n_kv_heads * c->head_dim;
}

int stage_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *system = NULL;
    const char *device = "cpu";
    bool chat = false, quiet = false;
    int max_new = 128, seed = 0;
    double temperature = 0.0, top_p = 1.0;
    arg_spec specs[] = {
        {"--model", ARG_STRING, &model_path, "HF model directory or .gguf file", false},
        {"--prompt", ARG_STRING, &prompt, "the prompt text", false},
        {"--prompt-file", ARG_STRING, &prompt_file, "the prompt from a UTF-8 file (instead of --prompt)", false},
        {"--chat", ARG_FLAG, &chat, "wrap the prompt as a user turn in the chat template", false},
        {"--system", ARG_STRING, &system, "system message for --chat (default: the model's)", false},
        {"--max-new", ARG_INT, &max_new, "tokens to generate at most (default 128)", false},
        {"--temperature", ARG_DOUBLE, &temperature, "0 = greedy (default 0)", false},
        {"--top-p", ARG_DOUBLE, &top_p, "nucleus sampling mass (default 1)", false},
        {"--seed", ARG_INT, &seed, "sampling seed (default 0)", false},
        {"--device", ARG_STRING, &device, "cpu (default), cuda or cuda:N", false},
        {"--quiet", ARG_FLAG, &quiet, "no speed summary on stderr", false},
    };
    int n_specs = sizeof specs / sizeof specs[0];
    const char *usage = "xtrain generate --model PATH --prompt TEXT|--prompt-file F [--chat] [--max-new N] "
                        "[--temperature T] [--top-p P] [--seed S] [--device cpu|cuda[:N]]";
    xd_err e = {{0}};
    int prc = args_parse(specs, n_specs, argc, argv, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain generate: %s\n", e.msg);
        args_usage(usage, specs, n_specs);
        return prc < 0 ? 2 : 0;
    }
    const char *bad = !model_path                  ? "--model is required"
                      : !prompt == !prompt_file      ? "give one of --prompt and --prompt-file"
                    : max_new < 0 ? "--max-new must be >= 0"
                    : !(temperature >= 0) ? "--temperature must be >= 0"
                    : !(top_p > 0 && top_p <= 1) ? "--top-p must be in (0, 1]" : NULL;
    if (bad) {
        fprintf(stderr, "xtrain generate: %s\n", bad);
        return 2;
    }

    int cuda = -1;
    if (trainer_parse_device(device, &cuda, &e)) {
        fprintf(stderr, "xtrain generate: %s\n", e.msg);
        return 2;
    }
    char *file_text = NULL;
    if (prompt_file) {
        size_t len;
        if (xd_read_file(prompt_file, (size_t)64 << 20, &file_text, &len, &e)) {
            fprintf(stderr, "xtrain generate: %s\n", e.msg);
            return 1;
        }
        if (strlen(file_text) != len) {
            fprintf(stderr, "xtrain generate: %s: a NUL byte at %zu: not a text file\n", prompt_file, strlen(file_text));
            free(file_text);
            return 1;
        }
        prompt = file_text;
    }
    model_transformer m;
    if (model_transformer_load(model_path, &m, &e)) {
        fprintf(stderr, "xtrain generate: %s\n", e.msg);
        free(file_text);
        return 1;
    }
    int rc = 0;
    char *text = NULL;
    int *ids = NULL;
    size_t n_ids = 0;
    gen_ctx g = {&m, {0}, {0}, NULL};
    float *logits = NULL;
    prob_index *scratch = NULL;
    const model_tokenizer *tok = m.tokenizer;
    if (!tok) {
        rc = xd_fail(&e, "%s has no tokenizer", model_path);
        goto done;
    }
    if (chat) {
        model_chat_message msgs[2];
        size_t n_msgs = 0;
        if (system) msgs[n_msgs++] = (model_chat_message){"system", system};
        msgs[n_msgs++] = (model_chat_message){"user", prompt};
        if ((rc = model_chat_render(tok, msgs, n_msgs, true, &text, &e))) goto done;
    }
    const char *input = chat ? text : prompt;
    rc = model_tokenizer_encode(tok, input, strlen(input), model_tokenizer_adds_bos(tok), chat, &ids,
                                &n_ids, &e);
    if (rc) goto done;
    if (n_ids == 0) {
        rc = xd_fail(&e, "the prompt encodes to no tokens");
        goto done;
    }
    long capacity = (long)n_ids + max_new;
    /* the teacher's KV cache grows with the context; the student's state does not */
    if (!m.cfg.student && capacity > m.cfg.max_positions) {
        if ((long)n_ids >= m.cfg.max_positions) {
            rc = xd_fail(&e, "the prompt has %zu tokens; the model takes at most %d", n_ids,
                         m.cfg.max_positions);
            goto done;
        }
        capacity = m.cfg.max_positions;
    }
    int V = m.cfg.vocab;
    if (cuda >= 0) {
#ifdef XD_HAVE_CUDA
        gpu_gen *gg = NULL;
        rc = gpu_gen_open(&gg, &m, cuda, (int)n_ids, (int)capacity, &e);
        g.gpu = gg;
#endif
    } else if (m.cfg.student)
        rc = model_student_state_init(&g.state, &m.cfg, &e);
    else
        rc = model_kv_cache_init(&g.cache, &m.cfg, (int)capacity, &e);
    if (rc) goto done;
    logits = xd_malloc(sizeof(float) * (size_t)V, &e);
    scratch = logits ? xd_malloc(sizeof *scratch * (size_t)V, &e) : NULL;
    if (!scratch) {
        rc = -1;
        goto done;
    }
    int eos = model_tokenizer_eos(tok), im_end = model_tokenizer_token_id(tok, "<|im_end|>");
    xd_rng rng;
    xd_rng_seed(&rng, (uint64_t)seed);

    double t0 = xd_now();
    if ((rc = feed(&g, ids, (int)n_ids, logits, &e))) goto done;
    double t_prefill = xd_now() - t0;
    int generated = 0;
    double t1 = xd_now();
    while (generated < max_new) {
        int next = sample_token(logits, V, temperature, top_p, &rng, scratch);
        if (next == eos || (chat && next == im_end)) break;
        const char *bytes;
        size_t len;
        if (model_tokenizer_token_bytes(tok, next, &bytes, &len) == 0) {
            fwrite(bytes, 1, len, stdout);
            fflush(stdout);
        }
        generated++;
        /* the teacher's cache holds the prompt and generated - 1 tokens: full at capacity */
        if (generated == max_new || (!m.cfg.student && (long)n_ids + generated > capacity)) break;
        if ((rc = feed(&g, &next, 1, logits, &e))) goto done;
    }
    double t_decode = xd_now() - t1;
    printf("\n");
    if (!quiet)
        fprintf(stderr, "[generate] prompt %zu tokens: prefill %.1f tok/s; %d new tokens: decode %.1f tok/s; "
                "%s %.1f MiB%s%s\n", n_ids, n_ids / t_prefill, generated, generated > 0 ? generated / t_decode : 0.0,
                m.cfg.student ? "recurrent state" : "KV cache", context_bytes(&g) / (1 << 20), g.gpu ? "; on " : "",
#ifdef XD_HAVE_CUDA
                g.gpu ? gpu_gen_device(g.gpu) : ""
#else
                ""
#endif
        );
done:
    if (rc) fprintf(stderr, "xtrain generate: %s\n", e.msg);
    free(scratch);
    free(logits);
    model_kv_cache_free(&g.cache);
    model_student_state_free(&g.state);
#ifdef XD_HAVE_CUDA
    gpu_gen_close(g.gpu);
#endif
    free(ids);
    free(text);
    free(file_text);
    model_transformer_free(&m);
    return rc ? 1 : 0;
}
