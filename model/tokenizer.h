/* model/tokenizer.h — byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM2) and SentencePiece-style BPE
 * with byte fallback (Llama-2), from tokenizer.json or GGUF metadata; ChatML chat template. */
#ifndef XD_MODEL_TOKENIZER_H
#define XD_MODEL_TOKENIZER_H

#include "gguf.h"

/* A loaded tokenizer is read-only: encode and decode may run on many threads at once. */
typedef struct model_tokenizer model_tokenizer;

/* dir: a Hugging Face model directory (tokenizer.json, optional tokenizer_config.json). */
int model_tokenizer_load_hf(const char *dir, model_tokenizer **out, xd_err *e);
/* The text of a tokenizer.json already in memory (no tokenizer_config.json); name for messages. */
int model_tokenizer_load_hf_json(const char *json, size_t len, const char *name,
                                 model_tokenizer **out, xd_err *e);
int model_tokenizer_load_gguf(const model_gguf *g, model_tokenizer **out, xd_err *e);
/* Writes dir/tokenizer.json and dir/tokenizer_config.json (bos, eos, add_bos_token, chat template)
 * that model_tokenizer_load_hf reads back to a tokenizer encoding and decoding exactly as t does,
 * and HF tokenizers / transformers load. Fails, naming the token, for what tokenizer.json cannot
 * express (two tokens of the same text, empty or unused-kind tokens). */
int model_tokenizer_save_hf(const model_tokenizer *t, const char *dir, xd_err *e);
void model_tokenizer_free(model_tokenizer *t);

int model_tokenizer_vocab_size(const model_tokenizer *t);
int model_tokenizer_bos(const model_tokenizer *t); /* -1 when none */
int model_tokenizer_eos(const model_tokenizer *t); /* -1 when none */
/* Whether a BOS token is put in front of encoded text (add_bos_token). */
bool model_tokenizer_adds_bos(const model_tokenizer *t);
/* Token id of a special token's text (e.g. "<|im_end|>"), -1 when absent. */
int model_tokenizer_token_id(const model_tokenizer *t, const char *text);

/* Whether a token is special (control / unknown): decode's skip_special drops these. */
bool model_tokenizer_is_special(const model_tokenizer *t, int id);

/* Encodes UTF-8 text. Special tokens written in the text (e.g. <|im_start|>) become their ids
 * when parse_special is true. add_bos follows model_tokenizer_adds_bos when the caller wants it.
 * *ids is malloc'd; the caller frees it. */
int model_tokenizer_encode(const model_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, int **ids, size_t *n_ids, xd_err *e);
/* Appends the text of tokens to a malloc'd NUL-terminated string (out_len may be NULL).
 * decode(encode(s)) == s for any valid UTF-8 s, as with HF tokenizers, save where HF also changes
 * it: NFC tokenizers (Qwen2) give NFC(s); a byte the vocabulary has no token for is dropped
 * (SmolLM2 lacks 21, e.g. 0x04); SentencePiece reads a literal U+2581 as a space. SentencePiece
 * decoding drops the one leading space its ▁ prefix stood for (HF's Strip decoder). Special tokens
 * are rendered as their text unless skip_special. Bytes are not checked to be UTF-8. */
int model_tokenizer_decode(const model_tokenizer *t, const int *ids, size_t n, bool skip_special,
                           char **out, size_t *out_len, xd_err *e);
/* Streaming decode: the bytes of one token (may be a partial UTF-8 sequence). SentencePiece's ▁ is
 * a space here: the caller drops the first token's prefix space. -1 for an id out of range. */
int model_tokenizer_token_bytes(const model_tokenizer *t, int id, const char **bytes,
                                size_t *len);

/* The ChatML prompt SmolLM2 and Qwen use: <|im_start|>{role}\n{content}<|im_end|>\n per message,
 * then <|im_start|>assistant\n when add_generation_prompt. When the first message is not "system",
 * the model's default system prompt goes first where its chat template has one (SmolLM2's, Qwen2's:
 * the literal text after "<|im_start|>system\n" in the template). Errors when the tokenizer has no
 * chat template or it is not ChatML. *out is malloc'd. */
typedef struct model_chat_message {
    const char *role;
    const char *content;
} model_chat_message;
int model_chat_render(const model_tokenizer *t, const model_chat_message *msgs, size_t n,
                      bool add_generation_prompt, char **out, xd_err *e);

#endif
