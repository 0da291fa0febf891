/* libFuzzer target for the tokenizers: the first input byte picks a small
 * vocabulary (byte-level BPE with one of llama.cpp's pre-tokenizers, or
 * SPM) and whether special tokens are parsed; the rest is the text. Any
 * text must tokenize; with BPE, valid UTF-8 must detokenize back to itself;
 * the streaming detokenizer must only ever emit valid UTF-8. The
 * vocabularies are written with the GGUF writer on first use and kept.
 * Also linked into the replay driver. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferd/gguf.h"
#include "inferd/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every tokenizer.ggml.pre name llama.cpp c392e5094 knows; the last slot
 * is the SPM vocabulary. */
static const char *const PRES[] = {
    "default",      "llama3",         "llama-v3",     "llama-bpe",  "falcon3",
    "deepseek-llm", "deepseek-coder", "deepseek-v3",  "falcon",     "mpt",
    "starcoder",    "gpt-2",          "phi-2",        "jina-es",    "jina-de",
    "gigachat",     "jina-v1-en",     "jina-v2-es",   "jina-v2-de", "jina-v2-code",
    "roberta-bpe",  "refact",         "command-r",    "qwen2",      "deepseek-r1-qwen",
    "stablelm2",    "olmo",           "dbrx",         "smaug-bpe",  "poro-chat",
    "chatglm-bpe",  "viking",         "jais",         "tekken",     "smollm",
    "codeshell",    "bloom",          "gpt3-finnish", "exaone",     "chameleon",
    "minerva-7b",   "megrez",
};
#define N_PRES (sizeof(PRES) / sizeof(PRES[0]))

static inferd_vocab *vocabs[N_PRES + 1];

/* GPT-2's byte alphabet: the UTF-8 of each byte's code point. */
static void byte_chars(char out[256][3])
{
    int next = 0x100;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = self ? b : next++;
        if (cp < 0x80) {
            out[b][0] = (char)cp;
            out[b][1] = '\0';
        } else {
            out[b][0] = (char)(0xC0 | (cp >> 6));
            out[b][1] = (char)(0x80 | (cp & 0x3F));
            out[b][2] = '\0';
        }
    }
}

static inferd_vocab *load(inferd_gguf_writer *w)
{
    char path[] = "/tmp/inferd-fuzz-vocab-XXXXXX";
    inferd_gguf *g = NULL;
    inferd_vocab *v = NULL;
    inferd_error err = {0};
    int fd = mkstemp(path);

    if (fd < 0)
        abort();
    close(fd);
    if (inferd_gguf_writer_write(w, path, &err) < 0 || inferd_gguf_open(path, &g, &err) < 0 ||
        inferd_vocab_load(g, &v, &err) < 0) {
        fprintf(stderr, "fuzz vocabulary: %s\n", err.msg);
        abort();
    }
    inferd_gguf_close(g);
    inferd_gguf_writer_destroy(w);
    unlink(path);
    return v;
}

/* BPE: the 256 byte characters, a few merges, "<|u|>" user-defined,
 * "<|c|>" and "<s>" control, "<mask>" (for jina-v2). */
static inferd_vocab *bpe_vocab(const char *pre)
{
    static const char *const merges[] = {"\xC4\xA0 t",
                                         "h e",
                                         "\xC4\xA0t he",
                                         "i n",
                                         "\xC4\xA0 a",
                                         "e r",
                                         "\xC4\xA0 \xC4\xA0",
                                         "\xC3\x83 \xC2\xA9",
                                         "1 2",
                                         "12 3",
                                         "' s",
                                         "\xC4\x8A \xC4\x8A"};
    static const char *const extra[] = {"\xC4\xA0t",
                                        "he",
                                        "\xC4\xA0the",
                                        "in",
                                        "\xC4\xA0\x61",
                                        "er",
                                        "\xC4\xA0\xC4\xA0",
                                        "\xC3\x83\xC2\xA9",
                                        "12",
                                        "123",
                                        "'s",
                                        "\xC4\x8A\xC4\x8A",
                                        "<|u|>",
                                        "<|c|>",
                                        "<s>",
                                        "<mask>"};
    const size_t n_extra = sizeof(extra) / sizeof(extra[0]);
    char chars[256][3];
    const char *tokens[256 + sizeof(extra) / sizeof(extra[0])];
    int32_t types[256 + sizeof(extra) / sizeof(extra[0])];
    inferd_gguf_writer *w = NULL;
    inferd_error err = {0};

    byte_chars(chars);
    for (int b = 0; b < 256; b++) {
        tokens[b] = chars[b];
        types[b] = INFERD_TOKEN_NORMAL;
    }
    for (size_t i = 0; i < n_extra; i++) {
        tokens[256 + i] = extra[i];
        types[256 + i] = INFERD_TOKEN_NORMAL;
    }
    types[256 + n_extra - 4] = INFERD_TOKEN_USER_DEFINED;
    types[256 + n_extra - 3] = INFERD_TOKEN_CONTROL;
    types[256 + n_extra - 2] = INFERD_TOKEN_CONTROL;
    types[256 + n_extra - 1] = INFERD_TOKEN_USER_DEFINED;
    if (inferd_gguf_writer_create(&w, &err) < 0 ||
        inferd_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &err) < 0 ||
        inferd_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, &err) < 0 ||
        inferd_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 256 + n_extra, &err) <
            0 ||
        inferd_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", INFERD_GGUF_I32, types,
                                   256 + n_extra, &err) < 0 ||
        inferd_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges,
                                       sizeof(merges) / sizeof(merges[0]), &err) < 0 ||
        inferd_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(256 + n_extra - 2),
                                   &err) < 0) {
        fprintf(stderr, "fuzz vocabulary: %s\n", err.msg);
        abort();
    }
    return load(w);
}

/* SPM: <unk>, <s>, </s>, the 256 byte tokens, a few pieces. */
static inferd_vocab *spm_vocab(void)
{
    static const char *const extra[] = {"\xE2\x96\x81", "\xE2\x96\x81t", "he", "\xE2\x96\x81the",
                                        "in",           "<|u|>"};
    const size_t n_extra = sizeof(extra) / sizeof(extra[0]);
    char bytes[256][7];
    const char *tokens[3 + 256 + sizeof(extra) / sizeof(extra[0])];
    int32_t types[3 + 256 + sizeof(extra) / sizeof(extra[0])];
    float scores[3 + 256 + sizeof(extra) / sizeof(extra[0])];
    size_t n = 0;
    inferd_gguf_writer *w = NULL;
    inferd_error err = {0};

    tokens[n] = "<unk>", types[n] = INFERD_TOKEN_UNKNOWN, scores[n++] = 0;
    tokens[n] = "<s>", types[n] = INFERD_TOKEN_CONTROL, scores[n++] = 0;
    tokens[n] = "</s>", types[n] = INFERD_TOKEN_CONTROL, scores[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        tokens[n] = bytes[b], types[n] = INFERD_TOKEN_BYTE, scores[n++] = 0;
    }
    for (size_t i = 0; i < n_extra; i++)
        tokens[n] = extra[i], types[n] = INFERD_TOKEN_NORMAL, scores[n++] = -(float)i;
    types[n - 1] = INFERD_TOKEN_USER_DEFINED;
    if (inferd_gguf_writer_create(&w, &err) < 0 ||
        inferd_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", &err) < 0 ||
        inferd_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, n, &err) < 0 ||
        inferd_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", INFERD_GGUF_I32, types, n,
                                   &err) < 0 ||
        inferd_gguf_writer_set_arr(w, "tokenizer.ggml.scores", INFERD_GGUF_F32, scores, n, &err) <
            0) {
        fprintf(stderr, "fuzz vocabulary: %s\n", err.msg);
        abort();
    }
    return load(w);
}

static bool valid_utf8(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (i + len > n || p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inferd_error err = {0};
    size_t n = 0;

    if (size < 1)
        return 0;
    size_t which = (data[0] & 0x7F) % (N_PRES + 1);
    bool parse_special = data[0] & 0x80;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    if (!vocabs[which])
        vocabs[which] = which == N_PRES ? spm_vocab() : bpe_vocab(PRES[which]);
    inferd_vocab *v = vocabs[which];

    int rc = inferd_tokenize(v, text, len, true, parse_special, NULL, 0, &n, &err);
    if (rc != 0 && rc != INFERD_E_RANGE)
        abort();
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    size_t n2 = 0;
    if (!ids || inferd_tokenize(v, text, len, true, parse_special, ids, n, &n2, &err) != 0 ||
        n2 != n)
        abort();

    /* BPE adds no space and drops none: valid text comes back, without
     * the BOS some add (jina-v2's "<mask>" eats the whitespace before it). */
    size_t out_len = 0;
    rc = inferd_detokenize(v, ids, n, true, true, NULL, 0, &out_len, &err);
    if (rc != 0 && rc != INFERD_E_RANGE)
        abort();
    char *back = malloc(out_len ? out_len : 1);
    size_t back_len = 0;
    if (!back || inferd_detokenize(v, ids, n, true, true, back, out_len, &back_len, &err) != 0)
        abort();
    bool jina = which < N_PRES && strncmp(PRES[which], "jina-v2", 7) == 0;
    if (which < N_PRES && !jina && valid_utf8((const unsigned char *)text, len) &&
        (back_len != len || memcmp(back, text, len) != 0))
        abort();

    inferd_detok d;
    size_t cap = inferd_vocab_max_piece_len(v) + 8;
    char *piece = malloc(cap);
    if (!piece)
        abort();
    inferd_detok_init(&d, v);
    d.special = parse_special;
    for (size_t i = 0; i < n; i++) {
        size_t k = inferd_detok_push(&d, ids[i], piece, cap);
        if (k == INFERD_DETOK_ERROR || !valid_utf8((unsigned char *)piece, k))
            abort();
    }
    if (inferd_detok_flush(&d, piece, cap) == INFERD_DETOK_ERROR)
        abort();
    free(piece);
    free(back);
    free(ids);
    return 0;
}
