/* Vocabulary from GGUF metadata, the SentencePiece (SPM) and byte-level BPE
 * tokenizers and detokenization, reproducing llama.cpp's token ids and
 * special-token rules. Invariants: a loaded vocabulary is immutable; every
 * token text is valid UTF-8, unique, and NUL-terminated in one blob; pieces
 * (the bytes a token renders to) are precomputed; BPE merges and split
 * patterns are built once at load. Threads: any, on a shared vocabulary;
 * inferd_tokenize allocates its own scratch per call.
 */
#include "inferd/tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/log.h"
#include "pretok.h"

#define MAX_TOKENS ((uint64_t)1 << 24) /* ids stay far inside int32_t */
#define MAX_TOKEN_BYTES ((uint64_t)1 << 16)
/* BPE merges: ranks stay exact as floats in the merge queue (< 2^24). */
#define MAX_MERGES ((uint64_t)1 << 24)
#define MAX_MERGE_BYTES (2 * MAX_TOKEN_BYTES + 1)
/* A BPE token whose text leaves the byte alphabet renders with llama.cpp's
 * "[UNK_BYTE_0x..]" markers, which can be longer than the text: each piece
 * and the sum beyond the texts' size are capped. */
#define MAX_PIECE_BYTES ((size_t)1 << 20)
#define MAX_PIECES_EXTRA ((size_t)64 << 20)

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_ADD_BOS "tokenizer.ggml.add_bos_token"
#define KEY_ADD_EOS "tokenizer.ggml.add_eos_token"
#define KEY_ADD_PREFIX "tokenizer.ggml.add_space_prefix"

/* Token attributes, as llama.cpp derives them from the token types. */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_LSTRIP = 1 << 7, /* drop whitespace before a matched special token */
    ATTR_RSTRIP = 1 << 8, /* drop whitespace after a matched special token */
};

/* Tokens that are matched in text before tokenizing (the special tokens). */
#define ATTR_SPECIAL_MATCH (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)
/* Tokens that render to nothing unless special rendering is asked for. */
#define ATTR_HIDDEN (ATTR_CONTROL | ATTR_UNKNOWN)

/* Special token slots. */
enum {
    SP_BOS,
    SP_EOS,
    SP_UNK,
    SP_PAD,
    SP_EOT,
    SP_EOM,
    SP_FIM_PRE,
    SP_FIM_SUF,
    SP_FIM_MID,
    SP_FIM_PAD,
    SP_FIM_REP,
    SP_FIM_SEP,
    SP_COUNT
};

typedef struct vocab_token {
    size_t text_off;    /* into vocab->text, NUL-terminated */
    size_t piece_off;   /* into vocab->pieces: rendering with special = true */
    uint32_t text_len;  /* bytes */
    uint32_t piece_len; /* bytes */
    float score;
    uint16_t attr; /* ATTR_* */
    uint8_t type;  /* inferd_token_type as read */
    uint8_t eog;   /* 1 if it ends generation */
} vocab_token;

/* One BPE merge "left right": its two texts back to back in merge_text. */
typedef struct bpe_merge {
    size_t off;        /* into vocab->merge_text */
    uint32_t left_len; /* bytes of the left text */
    uint32_t len;      /* bytes of both */
} bpe_merge;

/* GPT-2's byte alphabet: byte b is written as code point 0x21..0x7E,
 * 0xA1..0xAC, 0xAE..0xFF (itself) or 0x100 + n for the n-th other byte. */
#define BYTE_ALPHABET_END 0x144 /* code points of the alphabet are below */

struct inferd_vocab {
    inferd_vocab_kind kind;
    int32_t n_tokens;
    vocab_token *tokens; /* (n_tokens) */
    char *text;          /* all token texts, each NUL-terminated */
    char *pieces;        /* all pieces, back to back */
    int32_t *map;        /* open-addressing text -> id table, -1 = empty */
    size_t map_mask;     /* table size - 1 (a power of two minus one) */
    int32_t byte_to_id[256];
    int32_t *special_ids; /* tokens matched in text, longest first */
    size_t n_special;
    int32_t ids[SP_COUNT];
    size_t max_piece_len;
    bool add_bos;
    bool add_eos;
    bool add_space_prefix;

    /* BPE only. */
    const inferd__pretok_info *pre_info; /* the tokenizer.ggml.pre settings */
    inferd__pretok *pretok;              /* its compiled split patterns */
    bpe_merge *merges;                   /* (n_merges), index = rank */
    size_t n_merges;
    char *merge_text;
    int32_t *merge_map; /* open addressing (left, right) -> rank */
    size_t merge_mask;
    uint8_t byte_enc[256][2];                 /* UTF-8 of each byte's alphabet code point */
    uint8_t byte_enc_len[256];                /* 1 or 2 */
    int16_t alphabet_byte[BYTE_ALPHABET_END]; /* code point -> byte, -1 if none */
    bool ignore_merges;                       /* a word that is a token is taken whole */
};

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/* Length of the sequence a valid lead byte starts; 0 for bytes that cannot
 * start one (continuation bytes, C0, C1, F5..FF). */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return 2;
    if (c < 0xF0)
        return 3;
    if (c < 0xF5)
        return 4;
    return 0;
}

/* Whether @p c may follow the valid incomplete prefix p[0..n). The second
 * byte's range depends on the lead so that overlong forms, surrogates and
 * code points above U+10FFFF are refused. */
static bool utf8_continues(const unsigned char *p, size_t n, unsigned char c)
{
    if ((c & 0xC0) != 0x80)
        return false;
    if (n == 1) {
        switch (p[0]) {
        case 0xE0: return c >= 0xA0;
        case 0xED: return c <= 0x9F;
        case 0xF0: return c >= 0x90;
        case 0xF4: return c <= 0x8F;
        default: break;
        }
    }
    return true;
}

static bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq_len(p[i]);
        if (n == 0 || n > len - i)
            return false;
        for (size_t k = 1; k < n; k++)
            if (!utf8_continues(p + i, k, p[i + k]))
                return false;
        i += n;
    }
    return true;
}

/* Bytes in the "character" llama.cpp's SPM splitter takes at lead byte @p c:
 * decided by the high nibble only, so a continuation byte counts as one
 * character and invalid sequences are cut without checking. */
static size_t spm_char_len(unsigned char c)
{
    static const uint8_t by_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return by_nibble[c >> 4];
}

static const char SPACE_ESCAPE[3] = {'\xE2', '\x96', '\x81'}; /* U+2581 */
static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'};  /* U+FFFD */

/* The whitespace llama.cpp's isspace() sees in the "C" locale. */
static bool is_ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* ------------------------------------------------------------------------ */
/* Text -> id table                                                          */
/* ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static const char *tok_text(const inferd_vocab *v, int32_t id)
{
    return v->text + v->tokens[id].text_off;
}

int32_t inferd_vocab_find(const inferd_vocab *v, const char *text, size_t len)
{
    if (!v || (!text && len))
        return INFERD_TOKEN_NONE;
    size_t i = (size_t)hash_bytes(text, len) & v->map_mask;
    for (;;) {
        int32_t id = v->map[i];
        if (id < 0)
            return INFERD_TOKEN_NONE;
        if (v->tokens[id].text_len == len && memcmp(tok_text(v, id), text, len) == 0)
            return id;
        i = (i + 1) & v->map_mask;
    }
}

static int32_t find_str(const inferd_vocab *v, const char *s)
{
    return inferd_vocab_find(v, s, strlen(s));
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/* Texts by which llama.cpp (c392e5094) recognises special tokens that the
 * metadata does not name; the first one present is taken. ("<｜...｜>" are
 * DeepSeek's, with fullwidth bars and U+2581.) */
static const char *const EOT_TEXTS[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<EOT>",
                                        "<\xEF\xBD\x9C"
                                        "end\xE2\x96\x81"
                                        "of\xE2\x96\x81"
                                        "sentence\xEF\xBD\x9C>",
                                        NULL};
static const char *const EOM_TEXTS[] = {"<|eom_id|>", NULL};
static const char *const FIM_PRE_TEXTS[] = {"<|fim_prefix|>", "<fim-prefix>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81"
                                            "begin\xEF\xBD\x9C>",
                                            "<PRE>", NULL};
static const char *const FIM_SUF_TEXTS[] = {"<|fim_suffix|>", "<fim-suffix>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81"
                                            "hole\xEF\xBD\x9C>",
                                            "<SUF>", NULL};
static const char *const FIM_MID_TEXTS[] = {"<|fim_middle|>", "<fim-middle>",
                                            "<\xEF\xBD\x9C"
                                            "fim\xE2\x96\x81"
                                            "end\xEF\xBD\x9C>",
                                            "<MID>", NULL};
static const char *const FIM_PAD_TEXTS[] = {"<|fim_pad|>", "<fim-pad>", "<PAD>", NULL};
static const char *const FIM_REP_TEXTS[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
                                            NULL};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};

/* Tokens that end generation because of their text (besides EOS, EOT, EOM
 * and the FIM pad, repo and file-separator tokens). Later llama.cpp
 * versions list more ("</s>", "<|end_of_text|>", ...); c392e5094 does not,
 * and a Qwen2 vocabulary has "</s>" as an ordinary token. */
static const char *const EOG_TEXTS[] = {"<|eot_id|>",    "<|im_end|>", "<|end|>", "<end_of_turn>",
                                        "<|endoftext|>", "<|eom_id|>", "<EOT>",   NULL};

static const struct {
    int slot;
    const char *key;
} SPECIAL_KEYS[] = {
    /* In llama.cpp's order: a later key for the same slot wins. */
    {SP_BOS, "tokenizer.ggml.bos_token_id"},
    {SP_EOS, "tokenizer.ggml.eos_token_id"},
    {SP_EOT, "tokenizer.ggml.eot_token_id"},
    {SP_EOM, "tokenizer.ggml.eom_token_id"},
    {SP_UNK, "tokenizer.ggml.unknown_token_id"},
    {SP_PAD, "tokenizer.ggml.padding_token_id"},
    {SP_FIM_PRE, "tokenizer.ggml.fim_pre_token_id"},
    {SP_FIM_SUF, "tokenizer.ggml.fim_suf_token_id"},
    {SP_FIM_MID, "tokenizer.ggml.fim_mid_token_id"},
    {SP_FIM_PAD, "tokenizer.ggml.fim_pad_token_id"},
    {SP_FIM_REP, "tokenizer.ggml.fim_rep_token_id"},
    {SP_FIM_SEP, "tokenizer.ggml.fim_sep_token_id"},
    {SP_FIM_PRE, "tokenizer.ggml.prefix_token_id"},
    {SP_FIM_SUF, "tokenizer.ggml.suffix_token_id"},
    {SP_FIM_MID, "tokenizer.ggml.middle_token_id"},
};

static const struct {
    int slot;
    const char *const *texts;
} DETECTED[] = {
    {SP_EOT, EOT_TEXTS},         {SP_EOM, EOM_TEXTS},         {SP_FIM_PRE, FIM_PRE_TEXTS},
    {SP_FIM_SUF, FIM_SUF_TEXTS}, {SP_FIM_MID, FIM_MID_TEXTS}, {SP_FIM_PAD, FIM_PAD_TEXTS},
    {SP_FIM_REP, FIM_REP_TEXTS}, {SP_FIM_SEP, FIM_SEP_TEXTS},
};

static uint16_t attr_of_type(int32_t type)
{
    switch (type) {
    case INFERD_TOKEN_NORMAL: return ATTR_NORMAL;
    case INFERD_TOKEN_UNKNOWN: return ATTR_UNKNOWN;
    case INFERD_TOKEN_CONTROL: return ATTR_CONTROL;
    case INFERD_TOKEN_USER_DEFINED: return ATTR_USER_DEFINED;
    case INFERD_TOKEN_UNUSED: return ATTR_UNUSED;
    case INFERD_TOKEN_BYTE: return ATTR_BYTE;
    default: return 0;
    }
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte a "<0xHH>" text (HH: two hex digits) stands for, or -1. */
static int parse_byte_token(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

/* A short printable excerpt of a token text for error messages. */
static int excerpt_len(size_t len) { return len > 40 ? 40 : (int)len; }

/* Read the array key @p key: its index, or -1 when absent (err untouched). */
static int find_array(const inferd_gguf *g, const char *key, int64_t *out_idx, inferd_error *err)
{
    int64_t i = inferd_gguf_find_key(g, key);
    if (i >= 0 && inferd_gguf_kv_type(g, (uint64_t)i) != INFERD_GGUF_ARRAY)
        return inferd_fail(err, INFERD_E_FORMAT, "%s must be an array (it has type %d)", key,
                           (int)inferd_gguf_kv_type(g, (uint64_t)i));
    *out_idx = i;
    return 0;
}

static int load_model_kind(const inferd_gguf *g, inferd_vocab_kind *out_kind, inferd_error *err)
{
    inferd_gguf_str model;
    int rc = inferd_gguf_get_str(g, KEY_MODEL, &model, err);

    if (rc == INFERD_E_NOT_FOUND)
        return inferd_fail(err, INFERD_E_NOT_FOUND, "%s is not set: the file has no tokenizer",
                           KEY_MODEL);
    if (rc < 0)
        return rc;
    int n = model.len > 64 ? 64 : (int)model.len;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0) {
        *out_kind = INFERD_VOCAB_SPM;
        return 0;
    }
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0) {
        *out_kind = INFERD_VOCAB_BPE;
        return 0;
    }
    if ((model.len == 4 && memcmp(model.ptr, "none", 4) == 0) ||
        (model.len == 8 && memcmp(model.ptr, "no_vocab", 8) == 0))
        return inferd_fail(err, INFERD_E_NOT_FOUND, "%s is '%.*s': the file has no tokenizer",
                           KEY_MODEL, n, model.ptr);
    return inferd_fail(err, INFERD_E_UNSUPPORTED,
                       "tokenizer model '%.*s' (%s) is not supported (supported: 'llama' SPM, "
                       "'gpt2' byte-level BPE)",
                       n, model.ptr, KEY_MODEL);
}

/* The pre-tokenizer of a BPE vocabulary (tokenizer.ggml.pre). llama.cpp
 * takes "default" when the key is missing, warning that quality suffers;
 * an unknown name is refused, as llama.cpp does. */
static int load_pre(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    inferd_gguf_str pre = {"default", 7};
    int rc = inferd_gguf_get_str(g, KEY_PRE, &pre, err);

    if (rc == INFERD_E_NOT_FOUND) {
        inferd_log_debug("tokenizer",
                         "%s is not set: using the 'default' pre-tokenizer, as "
                         "llama.cpp does (tokens may differ from the model's)",
                         KEY_PRE);
        pre = (inferd_gguf_str){"default", 7};
    } else if (rc < 0) {
        return rc;
    }
    if (v->kind != INFERD_VOCAB_BPE)
        return 0; /* only BPE vocabularies have a pre-tokenizer */
    v->pre_info = inferd__pretok_find(pre.ptr, (size_t)pre.len);
    if (!v->pre_info) {
        /* Name as many of the supported ones as the message can hold. */
        char names[128];
        size_t used = 0, shown = 0, total = 0;
        while (inferd__pretok_name(total))
            total++;
        for (const char *nm; (nm = inferd__pretok_name(shown)) != NULL; shown++) {
            int w = snprintf(names + used, sizeof(names) - used, "%s%s", shown ? ", " : "", nm);
            if (w < 0 || (size_t)w >= sizeof(names) - used) {
                names[used] = '\0';
                break;
            }
            used += (size_t)w;
        }
        int n = pre.len > 48 ? 48 : (int)pre.len;
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "%s '%.*s' is not a known pre-tokenizer (supported: %s%s, see "
                           "docs/tokenizer.md)",
                           KEY_PRE, n, pre.ptr, names, shown < total ? ", ..." : "");
    }
    return inferd__pretok_create(v->pre_info, &v->pretok, err);
}

/* Copy the token texts into one blob, validating each. */
static int load_texts(inferd_vocab *v, const inferd_gguf *g, uint64_t key_idx, inferd_error *err)
{
    size_t total = 0;
    char name[32];

    for (int32_t i = 0; i < v->n_tokens; i++) {
        inferd_gguf_str s = inferd_gguf_kv_arr_str(g, key_idx, (uint64_t)i);
        if (s.len > MAX_TOKEN_BYTES)
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%d] is %llu bytes long (at most %llu)",
                               KEY_TOKENS, (int)i, (unsigned long long)s.len,
                               (unsigned long long)MAX_TOKEN_BYTES);
        /* llama.cpp reads token texts as C strings, so a NUL ends one. */
        size_t len = s.ptr ? strnlen(s.ptr, (size_t)s.len) : 0;
        if (!utf8_valid(s.ptr, len))
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%d] is not valid UTF-8", KEY_TOKENS,
                               (int)i);
        if (len == 0)
            len = (size_t)snprintf(name, sizeof(name), "[EMPTY_%d]", (int)i);
        total += len + 1;
    }
    v->text = inferd_malloc(total);
    if (!v->text)
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for %zu bytes of token text",
                           KEY_TOKENS, total);
    size_t off = 0;
    for (int32_t i = 0; i < v->n_tokens; i++) {
        inferd_gguf_str s = inferd_gguf_kv_arr_str(g, key_idx, (uint64_t)i);
        size_t len = s.ptr ? strnlen(s.ptr, (size_t)s.len) : 0;
        if (len == 0) {
            /* llama.cpp names empty tokens so that they stay distinct. */
            len = (size_t)snprintf(v->text + off, total - off, "[EMPTY_%d]", (int)i);
        } else {
            memcpy(v->text + off, s.ptr, len);
        }
        v->text[off + len] = '\0';
        v->tokens[i].text_off = off;
        v->tokens[i].text_len = (uint32_t)len;
        off += len + 1;
    }
    return 0;
}

static int load_scores(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    int64_t idx = -1;
    int rc = find_array(g, KEY_SCORES, &idx, err);
    if (rc < 0)
        return rc;
    if (idx < 0)
        return 0; /* all scores 0 */
    inferd_gguf_type t = inferd_gguf_kv_arr_type(g, (uint64_t)idx);
    if (t != INFERD_GGUF_F32 && t != INFERD_GGUF_I32)
        return inferd_fail(err, INFERD_E_FORMAT, "%s must be an array of f32 (it holds type %d)",
                           KEY_SCORES, (int)t);
    uint64_t n = inferd_gguf_kv_arr_n(g, (uint64_t)idx);
    if (n != (uint64_t)v->n_tokens)
        return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries but %s has %d", KEY_SCORES,
                           (unsigned long long)n, KEY_TOKENS, (int)v->n_tokens);
    const unsigned char *data = inferd_gguf_kv_arr_data(g, (uint64_t)idx);
    for (int32_t i = 0; i < v->n_tokens; i++) {
        float f;
        if (t == INFERD_GGUF_F32) {
            memcpy(&f, data + (size_t)i * 4, 4);
        } else {
            int32_t x;
            memcpy(&x, data + (size_t)i * 4, 4);
            f = (float)x;
        }
        if (isnan(f))
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%d] is NaN", KEY_SCORES, (int)i);
        v->tokens[i].score = f;
    }
    return 0;
}

static int load_types(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    int64_t idx = -1;
    int rc = find_array(g, KEY_TYPES, &idx, err);
    const unsigned char *data = NULL;

    if (rc < 0)
        return rc;
    if (idx >= 0) {
        inferd_gguf_type t = inferd_gguf_kv_arr_type(g, (uint64_t)idx);
        if (t != INFERD_GGUF_I32)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s must be an array of i32 (it holds type %d)", KEY_TYPES, (int)t);
        uint64_t n = inferd_gguf_kv_arr_n(g, (uint64_t)idx);
        if (n != (uint64_t)v->n_tokens)
            return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries but %s has %d", KEY_TYPES,
                               (unsigned long long)n, KEY_TOKENS, (int)v->n_tokens);
        data = inferd_gguf_kv_arr_data(g, (uint64_t)idx);
    }
    for (int32_t i = 0; i < v->n_tokens; i++) {
        int32_t type = INFERD_TOKEN_NORMAL;
        if (data)
            memcpy(&type, data + (size_t)i * 4, 4);
        if (type < INFERD_TOKEN_UNDEFINED || type > INFERD_TOKEN_BYTE)
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%d] = %d is not a token type (0..6)",
                               KEY_TYPES, (int)i, (int)type);
        vocab_token *t = &v->tokens[i];
        t->type = (uint8_t)type;
        t->attr = attr_of_type(type);
        /* A BPE vocabulary renders byte-typed tokens as nothing, whatever
         * their text (llama.cpp). */
        if (type == INFERD_TOKEN_BYTE && v->kind == INFERD_VOCAB_SPM &&
            parse_byte_token(tok_text(v, i), t->text_len) < 0)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s[%d] '%.*s' has the byte type but is not spelled <0xHH>",
                               KEY_TOKENS, (int)i, excerpt_len(t->text_len), tok_text(v, i));
    }
    return 0;
}

static int build_map(inferd_vocab *v, inferd_error *err)
{
    size_t size = 16;
    while (size < (size_t)v->n_tokens * 2)
        size *= 2;
    v->map = inferd_malloc(size * sizeof(*v->map));
    if (!v->map)
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for the token table", KEY_TOKENS);
    memset(v->map, 0xff, size * sizeof(*v->map)); /* every slot -1 */
    v->map_mask = size - 1;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        const char *s = tok_text(v, id);
        size_t len = v->tokens[id].text_len;
        size_t i = (size_t)hash_bytes(s, len) & v->map_mask;
        while (v->map[i] >= 0) {
            int32_t other = v->map[i];
            if (v->tokens[other].text_len == len && memcmp(tok_text(v, other), s, len) == 0)
                return inferd_fail(err, INFERD_E_FORMAT,
                                   "%s: duplicate token '%.*s' at ids %d and %d", KEY_TOKENS,
                                   excerpt_len(len), s, (int)other, (int)id);
            i = (i + 1) & v->map_mask;
        }
        v->map[i] = id;
    }
    return 0;
}

static uint64_t merge_hash(const char *s, size_t left_len, size_t len)
{
    uint64_t h = hash_bytes(s, len) ^ ((uint64_t)left_len * 0x9E3779B97F4A7C15ull);
    return h ^ (h >> 31);
}

/* Rank of the merge of the @p left_len bytes at @p s with the rest of its
 * @p len bytes, or -1 when there is none. */
static int32_t merge_rank(const inferd_vocab *v, const char *s, size_t left_len, size_t len)
{
    size_t i = (size_t)merge_hash(s, left_len, len) & v->merge_mask;
    for (;;) {
        int32_t r = v->merge_map[i];
        if (r < 0)
            return -1;
        const bpe_merge *m = &v->merges[r];
        if (m->len == len && m->left_len == left_len && memcmp(v->merge_text + m->off, s, len) == 0)
            return r;
        i = (i + 1) & v->merge_mask;
    }
}

/* Where entry @p s (@p len bytes) splits into "left right": llama.cpp cuts
 * at the first space after the first byte. 0 if it does not split into two
 * non-empty texts. */
static size_t merge_split(const char *s, size_t len)
{
    const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
    if (!sp || (size_t)(sp - s) + 1 == len)
        return 0;
    return (size_t)(sp - s);
}

/* tokenizer.ggml.merges: "left right" strings, the rank being the index.
 * As in llama.cpp, texts need not be tokens (a merge whose result is no
 * token is still made; the result then goes out through the byte fallback)
 * and of two equal entries the first counts. */
static int load_merges(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    int64_t idx = -1;
    int rc = find_array(g, KEY_MERGES, &idx, err);
    size_t total = 0;

    if (rc < 0)
        return rc;
    if (idx < 0)
        return inferd_fail(err, INFERD_E_FORMAT, "%s is missing (a gpt2 vocabulary needs them)",
                           KEY_MERGES);
    if (inferd_gguf_kv_arr_type(g, (uint64_t)idx) != INFERD_GGUF_STRING)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "%s must be an array of strings (it holds type %d)", KEY_MERGES,
                           (int)inferd_gguf_kv_arr_type(g, (uint64_t)idx));
    uint64_t n = inferd_gguf_kv_arr_n(g, (uint64_t)idx);
    if (n > MAX_MERGES)
        return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries (at most %llu)", KEY_MERGES,
                           (unsigned long long)n, (unsigned long long)MAX_MERGES);
    for (uint64_t i = 0; i < n; i++) {
        inferd_gguf_str e = inferd_gguf_kv_arr_str(g, (uint64_t)idx, i);
        if (e.len > MAX_MERGE_BYTES)
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%llu] is %llu bytes long (at most %llu)",
                               KEY_MERGES, (unsigned long long)i, (unsigned long long)e.len,
                               (unsigned long long)MAX_MERGE_BYTES);
        /* Read as a C string, as llama.cpp does. */
        size_t len = e.ptr ? strnlen(e.ptr, (size_t)e.len) : 0;
        if (!utf8_valid(e.ptr, len))
            return inferd_fail(err, INFERD_E_FORMAT, "%s[%llu] is not valid UTF-8", KEY_MERGES,
                               (unsigned long long)i);
        if (merge_split(e.ptr, len) == 0)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s[%llu] '%.*s' is not two texts separated by a space", KEY_MERGES,
                               (unsigned long long)i, excerpt_len(len), len ? e.ptr : "");
        total += len - 1;
    }

    size_t size = 16;
    while (size < (size_t)n * 2)
        size *= 2;
    v->merges = inferd_malloc((n ? (size_t)n : 1) * sizeof(*v->merges));
    v->merge_text = inferd_malloc(total ? total : 1);
    v->merge_map = inferd_malloc(size * sizeof(*v->merge_map));
    if (!v->merges || !v->merge_text || !v->merge_map)
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for %llu merges", KEY_MERGES,
                           (unsigned long long)n);
    memset(v->merge_map, 0xff, size * sizeof(*v->merge_map)); /* every slot -1 */
    v->merge_mask = size - 1;
    v->n_merges = (size_t)n;

    size_t off = 0;
    for (uint64_t r = 0; r < n; r++) {
        inferd_gguf_str e = inferd_gguf_kv_arr_str(g, (uint64_t)idx, r);
        size_t len = strnlen(e.ptr, (size_t)e.len);
        size_t left = merge_split(e.ptr, len);
        bpe_merge *m = &v->merges[r];

        memcpy(v->merge_text + off, e.ptr, left);
        memcpy(v->merge_text + off + left, e.ptr + left + 1, len - left - 1);
        *m = (bpe_merge){off, (uint32_t)left, (uint32_t)(len - 1)};
        off += len - 1;
        if (merge_rank(v, v->merge_text + m->off, m->left_len, m->len) >= 0)
            continue; /* a repeat: the first one keeps its rank */
        size_t i = (size_t)merge_hash(v->merge_text + m->off, left, m->len) & v->merge_mask;
        while (v->merge_map[i] >= 0)
            i = (i + 1) & v->merge_mask;
        v->merge_map[i] = (int32_t)r;
    }
    return 0;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes for U+0100.. in byte order. */
static void build_byte_alphabet(inferd_vocab *v)
{
    uint32_t next = 0x100;

    for (size_t i = 0; i < BYTE_ALPHABET_END; i++)
        v->alphabet_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint32_t cp = self ? (uint32_t)b : next++;
        if (cp < 0x80) {
            v->byte_enc[b][0] = (uint8_t)cp;
            v->byte_enc_len[b] = 1;
        } else {
            v->byte_enc[b][0] = (uint8_t)(0xC0 | (cp >> 6));
            v->byte_enc[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
            v->byte_enc_len[b] = 2;
        }
        v->alphabet_byte[cp] = (int16_t)b;
    }
}

static int get_flag(const inferd_gguf *g, const char *key, bool *io_value, inferd_error *err)
{
    bool b;
    int rc = inferd_gguf_get_bool(g, key, &b, err);
    if (rc == INFERD_E_NOT_FOUND)
        return 0;
    if (rc < 0)
        return rc;
    *io_value = b;
    return 0;
}

static int load_special_ids(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    for (int s = 0; s < SP_COUNT; s++)
        v->ids[s] = INFERD_TOKEN_NONE;
    /* llama.cpp's defaults (SPM: BOS 1, EOS 2, UNK 0; BPE: BOS and EOS 11,
     * none for chatglm-bpe), dropped when the vocabulary is too small. */
    if (v->kind == INFERD_VOCAB_SPM) {
        v->ids[SP_BOS] = 1;
        v->ids[SP_EOS] = 2;
        v->ids[SP_UNK] = 0;
    } else {
        v->ids[SP_BOS] = v->pre_info->no_bos ? INFERD_TOKEN_NONE : 11;
        v->ids[SP_EOS] = 11;
    }
    for (int s = 0; s < SP_COUNT; s++)
        if (v->ids[s] >= v->n_tokens)
            v->ids[s] = INFERD_TOKEN_NONE;

    for (size_t k = 0; k < sizeof(SPECIAL_KEYS) / sizeof(SPECIAL_KEYS[0]); k++) {
        int64_t id;
        int rc = inferd_gguf_get_i64(g, SPECIAL_KEYS[k].key, &id, err);
        if (rc == INFERD_E_NOT_FOUND)
            continue;
        if (rc < 0)
            return rc;
        /* Converters write -1 (often as u32) for "no such token". */
        if (id == -1 || id == (int64_t)UINT32_MAX)
            continue;
        if (id < 0 || id >= v->n_tokens)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s = %lld is out of range (the vocabulary has %d tokens)",
                               SPECIAL_KEYS[k].key, (long long)id, (int)v->n_tokens);
        v->ids[SPECIAL_KEYS[k].slot] = (int32_t)id;
    }

    int rc;
    /* SPM adds BOS; BPE as its pre-tokenizer says (llama 3, tekken,
     * chameleon do). */
    v->add_bos = v->kind == INFERD_VOCAB_SPM || v->pre_info->add_bos;
    v->add_eos = false;
    if ((rc = get_flag(g, KEY_ADD_BOS, &v->add_bos, err)) < 0 ||
        (rc = get_flag(g, KEY_ADD_EOS, &v->add_eos, err)) < 0)
        return rc;
    if (v->add_bos && v->ids[SP_BOS] < 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "%s is true, but tokenizer.ggml.bos_token_id is not set", KEY_ADD_BOS);
    if (v->add_eos && v->ids[SP_EOS] < 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "%s is true, but tokenizer.ggml.eos_token_id is not set", KEY_ADD_EOS);
    return 0;
}

/* Special tokens found by text, the end-of-generation set and llama.cpp's
 * per-model attribute fix-ups, in llama.cpp's order (each step sees the
 * attributes the previous ones set). */
static void derive_special(inferd_vocab *v)
{
    for (size_t d = 0; d < sizeof(DETECTED) / sizeof(DETECTED[0]); d++) {
        int slot = DETECTED[d].slot;
        if (v->ids[slot] >= 0)
            continue;
        for (const char *const *t = DETECTED[d].texts; *t; t++) {
            int32_t id = find_str(v, *t);
            if (id >= 0) {
                v->ids[slot] = id;
                v->tokens[id].attr |= ATTR_CONTROL;
                break;
            }
        }
    }

    const int eog_slots[] = {SP_FIM_PAD, SP_FIM_REP, SP_FIM_SEP, SP_EOS, SP_EOT, SP_EOM};
    for (const char *const *t = EOG_TEXTS; *t; t++) {
        int32_t id = find_str(v, *t);
        if (id >= 0) {
            v->tokens[id].eog = 1;
            v->tokens[id].attr |= ATTR_CONTROL;
        }
    }
    for (size_t i = 0; i < sizeof(eog_slots) / sizeof(eog_slots[0]); i++)
        if (v->ids[eog_slots[i]] >= 0)
            v->tokens[v->ids[eog_slots[i]]].eog = 1;
}

typedef struct len_id {
    uint32_t len;
    int32_t id;
} len_id;

static int cmp_len_desc(const void *a, const void *b)
{
    const len_id *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The tokens matched in text before tokenizing, longest first (equal
 * lengths by id, a fixed order where llama.cpp's sort leaves it open). */
static int build_special_list(inferd_vocab *v, inferd_error *err)
{
    size_t n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        if (v->tokens[id].attr & ATTR_SPECIAL_MATCH)
            n++;
    if (n == 0)
        return 0;
    len_id *tmp = inferd_malloc(n * sizeof(*tmp));
    v->special_ids = inferd_malloc(n * sizeof(*v->special_ids));
    if (!tmp || !v->special_ids) {
        inferd_free(tmp);
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for the special tokens", KEY_TOKENS);
    }
    n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++)
        if (v->tokens[id].attr & ATTR_SPECIAL_MATCH)
            tmp[n++] = (len_id){v->tokens[id].text_len, id};
    qsort(tmp, n, sizeof(*tmp), cmp_len_desc);
    for (size_t i = 0; i < n; i++)
        v->special_ids[i] = tmp[i].id;
    v->n_special = n;
    inferd_free(tmp);
    return 0;
}

/* llama.cpp's per-model attributes: the jina-v2 BPE vocabularies' "<mask>"
 * eats the whitespace before it; otherwise whitespace after Phi-3's special
 * tokens is stripped (they are followed by a newline in its chat format),
 * Phi-3 being recognised by name. */
static int apply_name_rules(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    inferd_gguf_str name;
    char lower[256];

    if (v->pre_info && v->pre_info->mask_lstrip) {
        int32_t mask = find_str(v, "<mask>");
        if (mask < 0)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s is '%s', whose vocabulary has a '<mask>' token, but there "
                               "is none",
                               KEY_PRE, v->pre_info->name);
        v->tokens[mask].attr |= ATTR_LSTRIP;
        return 0;
    }
    int rc = inferd_gguf_get_str(g, "general.name", &name, err);

    if (rc == INFERD_E_NOT_FOUND)
        return 0;
    if (rc < 0)
        return rc;
    size_t n = name.len < sizeof(lower) - 1 ? (size_t)name.len : sizeof(lower) - 1;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)name.ptr[i]);
    lower[n] = '\0';
    if (!strstr(lower, "phi-3") && !strstr(lower, "phi3"))
        return 0;
    for (size_t i = 0; i < v->n_special; i++)
        v->tokens[v->special_ids[i]].attr |= ATTR_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    int32_t id = find_str(v, "</s>");
    if (id >= 0)
        v->tokens[id].attr |= ATTR_RSTRIP;
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if ((id = find_str(v, keep[i])) >= 0)
            v->tokens[id].attr &= (uint16_t)~ATTR_RSTRIP;
    return 0;
}

/* Write "[UNK_BYTE_0x<hex of cp's UTF-8><token text>]", llama.cpp's
 * rendering of a BPE code point outside the byte alphabet, to @p dst (NULL:
 * only count). */
static size_t render_unk_byte(const char *cp_utf8, size_t cp_len, const char *text, size_t text_len,
                              char *dst)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 12 + 2 * cp_len + text_len + 1;

    if (dst) {
        memcpy(dst, "[UNK_BYTE_0x", 12);
        for (size_t k = 0; k < cp_len; k++) {
            dst[12 + 2 * k] = hex[(unsigned char)cp_utf8[k] >> 4];
            dst[13 + 2 * k] = hex[(unsigned char)cp_utf8[k] & 15];
        }
        memcpy(dst + 12 + 2 * cp_len, text, text_len);
        dst[n - 1] = ']';
    }
    return n;
}

/* The piece of token @p id (as rendered with special = true) written to
 * @p dst, or only counted when @p dst is NULL. */
static size_t render_piece(const inferd_vocab *v, int32_t id, char *dst)
{
    const vocab_token *t = &v->tokens[id];
    const char *s = tok_text(v, id);
    size_t n = 0;

    if (t->attr & (ATTR_HIDDEN | ATTR_USER_DEFINED)) {
        if (dst)
            memcpy(dst, s, t->text_len);
        return t->text_len;
    }
    if ((t->attr & ATTR_NORMAL) && v->kind == INFERD_VOCAB_BPE) {
        /* Each code point of the byte alphabet is one byte. */
        for (size_t i = 0; i < t->text_len;) {
            const unsigned char *p = (const unsigned char *)s + i;
            size_t len = utf8_seq_len(p[0]); /* the text is valid UTF-8 */
            /* The alphabet's code points take one or two bytes. */
            uint32_t cp = BYTE_ALPHABET_END;
            if (len == 1)
                cp = p[0];
            else if (len == 2)
                cp = ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
            if (cp < BYTE_ALPHABET_END && v->alphabet_byte[cp] >= 0) {
                if (dst)
                    dst[n] = (char)v->alphabet_byte[cp];
                n++;
            } else {
                n += render_unk_byte(s + i, len, s, t->text_len, dst ? dst + n : NULL);
            }
            i += len;
        }
        return n;
    }
    if (t->attr & ATTR_NORMAL) {
        for (size_t i = 0; i < t->text_len; i++) {
            if (i + 3 <= t->text_len && memcmp(s + i, SPACE_ESCAPE, 3) == 0) {
                if (dst)
                    dst[n] = ' ';
                i += 2;
            } else if (dst) {
                dst[n] = s[i];
            }
            n++;
        }
        return n;
    }
    if ((t->attr & ATTR_BYTE) && v->kind == INFERD_VOCAB_SPM) {
        if (dst)
            dst[0] = (char)parse_byte_token(s, t->text_len);
        return 1;
    }
    /* Unused and undefined tokens render to nothing, and so do byte
     * tokens of a BPE vocabulary. */
    return 0;
}

static int build_bytes_and_pieces(inferd_vocab *v, inferd_error *err)
{
    size_t total = 0, text_total = 0;

    for (int b = 0; b < 256 && v->kind == INFERD_VOCAB_SPM; b++) {
        char name[8];
        char one = (char)b;
        snprintf(name, sizeof(name), "<0x%02X>", b);
        int32_t id = find_str(v, name);
        if (id < 0)
            id = inferd_vocab_find(v, &one, 1);
        v->byte_to_id[b] = id;
    }
    for (int b = 0; b < 256 && v->kind == INFERD_VOCAB_BPE; b++)
        v->byte_to_id[b] = INFERD_TOKEN_NONE; /* BPE falls back per byte of text */

    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n = render_piece(v, id, NULL);
        if (n > MAX_PIECE_BYTES)
            return inferd_fail(err, INFERD_E_FORMAT,
                               "%s[%d] '%.*s' renders to %zu bytes (at most %zu)", KEY_TOKENS,
                               (int)id, excerpt_len(v->tokens[id].text_len), tok_text(v, id), n,
                               MAX_PIECE_BYTES);
        total += n;
        text_total += v->tokens[id].text_len;
    }
    if (total > text_total + MAX_PIECES_EXTRA)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "%s: the tokens render to %zu bytes, more than "
                           "their texts' %zu plus %zu",
                           KEY_TOKENS, total, text_total, MAX_PIECES_EXTRA);
    v->pieces = inferd_malloc(total ? total : 1);
    if (!v->pieces)
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for %zu bytes of pieces", KEY_TOKENS,
                           total);

    size_t off = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        vocab_token *t = &v->tokens[id];
        size_t n = render_piece(v, id, v->pieces + off);
        t->piece_off = off;
        t->piece_len = (uint32_t)n;
        if (n > v->max_piece_len)
            v->max_piece_len = n;
        off += n;
    }
    return 0;
}

int inferd_vocab_load(const inferd_gguf *g, inferd_vocab **out_vocab, inferd_error *err)
{
    inferd_vocab *v;
    inferd_vocab_kind kind = INFERD_VOCAB_SPM;
    int64_t tokens_idx = -1;
    int rc;

    if (!g || !out_vocab)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_vocab_load: NULL argument");
    if ((rc = load_model_kind(g, &kind, err)) < 0)
        return rc;
    if ((rc = find_array(g, KEY_TOKENS, &tokens_idx, err)) < 0)
        return rc;
    if (tokens_idx < 0)
        return inferd_fail(err, INFERD_E_FORMAT, "%s is missing (the list of token texts)",
                           KEY_TOKENS);
    if (inferd_gguf_kv_arr_type(g, (uint64_t)tokens_idx) != INFERD_GGUF_STRING)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "%s must be an array of strings (it holds type %d)", KEY_TOKENS,
                           (int)inferd_gguf_kv_arr_type(g, (uint64_t)tokens_idx));
    uint64_t n = inferd_gguf_kv_arr_n(g, (uint64_t)tokens_idx);
    if (n == 0 || n > MAX_TOKENS)
        return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries (must be 1..%llu)",
                           KEY_TOKENS, (unsigned long long)n, (unsigned long long)MAX_TOKENS);

    v = inferd_calloc(1, sizeof(*v));
    if (!v)
        return inferd_fail(err, INFERD_E_NOMEM, "vocabulary: no memory");
    v->kind = kind;
    v->n_tokens = (int32_t)n;
    v->tokens = inferd_calloc((size_t)n, sizeof(*v->tokens));
    if (!v->tokens) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "vocabulary: no memory for %llu tokens",
                         (unsigned long long)n);
        goto fail;
    }
    if ((rc = load_pre(v, g, err)) < 0 || (rc = load_texts(v, g, (uint64_t)tokens_idx, err)) < 0 ||
        (rc = load_scores(v, g, err)) < 0 || (rc = load_types(v, g, err)) < 0 ||
        (rc = build_map(v, err)) < 0)
        goto fail;
    if (kind == INFERD_VOCAB_BPE) {
        v->ignore_merges = v->pre_info->ignore_merges;
        build_byte_alphabet(v);
        if ((rc = load_merges(v, g, err)) < 0)
            goto fail;
    }
    /* SentencePiece puts a space before the text; BPE does not, but
     * llama.cpp still reads the key for BPE, where only detokenizing uses
     * it (one leading space is dropped). */
    v->add_space_prefix = kind == INFERD_VOCAB_SPM;
    if ((rc = get_flag(g, KEY_ADD_PREFIX, &v->add_space_prefix, err)) < 0 ||
        (rc = load_special_ids(v, g, err)) < 0)
        goto fail;
    derive_special(v);
    if ((rc = build_special_list(v, err)) < 0 || (rc = apply_name_rules(v, g, err)) < 0 ||
        (rc = build_bytes_and_pieces(v, err)) < 0)
        goto fail;
    *out_vocab = v;
    return 0;

fail:
    inferd_vocab_destroy(v);
    return rc;
}

void inferd_vocab_destroy(inferd_vocab *v)
{
    if (!v)
        return;
    inferd__pretok_destroy(v->pretok);
    inferd_free(v->merge_map);
    inferd_free(v->merge_text);
    inferd_free(v->merges);
    inferd_free(v->special_ids);
    inferd_free(v->map);
    inferd_free(v->pieces);
    inferd_free(v->text);
    inferd_free(v->tokens);
    inferd_free(v);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */
/* ------------------------------------------------------------------------ */

static bool id_ok(const inferd_vocab *v, int32_t id) { return v && id >= 0 && id < v->n_tokens; }

inferd_vocab_kind inferd_vocab_get_kind(const inferd_vocab *v) { return v->kind; }
const char *inferd_vocab_pre(const inferd_vocab *v)
{
    return v->pre_info ? v->pre_info->name : NULL;
}
int32_t inferd_vocab_n_tokens(const inferd_vocab *v) { return v->n_tokens; }
int32_t inferd_vocab_bos(const inferd_vocab *v) { return v->ids[SP_BOS]; }
int32_t inferd_vocab_eos(const inferd_vocab *v) { return v->ids[SP_EOS]; }
int32_t inferd_vocab_eot(const inferd_vocab *v) { return v->ids[SP_EOT]; }
int32_t inferd_vocab_unk(const inferd_vocab *v) { return v->ids[SP_UNK]; }
int32_t inferd_vocab_pad(const inferd_vocab *v) { return v->ids[SP_PAD]; }
bool inferd_vocab_add_bos(const inferd_vocab *v) { return v->add_bos; }
bool inferd_vocab_add_eos(const inferd_vocab *v) { return v->add_eos; }
bool inferd_vocab_add_space_prefix(const inferd_vocab *v) { return v->add_space_prefix; }
size_t inferd_vocab_max_piece_len(const inferd_vocab *v) { return v->max_piece_len; }

bool inferd_vocab_is_eog(const inferd_vocab *v, int32_t id)
{
    return id_ok(v, id) && v->tokens[id].eog;
}

bool inferd_vocab_is_control(const inferd_vocab *v, int32_t id)
{
    return id_ok(v, id) && (v->tokens[id].attr & ATTR_CONTROL);
}

inferd_token_type inferd_vocab_token_type(const inferd_vocab *v, int32_t id)
{
    return id_ok(v, id) ? (inferd_token_type)v->tokens[id].type : INFERD_TOKEN_UNDEFINED;
}

float inferd_vocab_token_score(const inferd_vocab *v, int32_t id)
{
    return id_ok(v, id) ? v->tokens[id].score : 0.0f;
}

const char *inferd_vocab_token_text(const inferd_vocab *v, int32_t id, size_t *out_len)
{
    if (!id_ok(v, id))
        return NULL;
    if (out_len)
        *out_len = v->tokens[id].text_len;
    return tok_text(v, id);
}

/* The piece of @p id as rendered with @p special. */
static const char *piece_of(const inferd_vocab *v, int32_t id, bool special, size_t *out_len)
{
    const vocab_token *t = &v->tokens[id];
    if (!special && (t->attr & ATTR_HIDDEN)) {
        *out_len = 0;
        return v->pieces;
    }
    *out_len = t->piece_len;
    return v->pieces + t->piece_off;
}

int32_t inferd_token_to_piece(const inferd_vocab *v, int32_t id, bool special, char *buf,
                              size_t cap)
{
    size_t n;
    if (!id_ok(v, id))
        return 0;
    const char *p = piece_of(v, id, special, &n);
    if (n > cap)
        return -(int32_t)n;
    if (n)
        memcpy(buf, p, n);
    return (int32_t)n;
}

/* ------------------------------------------------------------------------ */
/* Tokenizing                                                                */
/* ------------------------------------------------------------------------ */

/* A piece of the input: raw text, or a special token matched in it. */
typedef struct frag {
    int32_t id; /* token id, or -1 for raw text */
    size_t off; /* raw text: byte offset in the input */
    size_t len; /* raw text: bytes (> 0) */
} frag;

typedef struct frag_list {
    frag *items;
    size_t n, cap;
} frag_list;

static int frag_push(frag_list *l, frag f)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        frag *p = inferd_realloc(l->items, cap * sizeof(*p));
        if (!p)
            return INFERD_E_NOMEM;
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = f;
    return 0;
}

/* Split the input at every occurrence of a special token, taking the tokens
 * longest first, each over the raw fragments the earlier ones left. Control
 * and unknown tokens take part only with @p parse_special. */
static int partition(const inferd_vocab *v, const char *text, size_t len, bool parse_special,
                     frag_list *io, frag_list *tmp)
{
    int rc;

    io->n = 0;
    if ((rc = frag_push(io, (frag){-1, 0, len})) < 0)
        return rc;
    for (size_t k = 0; k < v->n_special; k++) {
        int32_t id = v->special_ids[k];
        const vocab_token *t = &v->tokens[id];
        const char *s = tok_text(v, id);

        if (!parse_special && (t->attr & ATTR_HIDDEN))
            continue;
        tmp->n = 0;
        for (size_t f = 0; f < io->n; f++) {
            frag cur = io->items[f];
            if (cur.id >= 0) {
                if ((rc = frag_push(tmp, cur)) < 0)
                    return rc;
                continue;
            }
            size_t base = cur.off, blen = cur.len;
            while (blen > 0) {
                const char *hit = memmem(text + base, blen, s, t->text_len);
                if (!hit) {
                    if ((rc = frag_push(tmp, (frag){-1, base, blen})) < 0)
                        return rc;
                    break;
                }
                size_t at = (size_t)(hit - text);
                size_t left = at - base;
                if (t->attr & ATTR_LSTRIP) {
                    while (left > 0 && is_ascii_space((unsigned char)text[base + left - 1]))
                        left--;
                }
                if (left > 0 && (rc = frag_push(tmp, (frag){-1, base, left})) < 0)
                    return rc;
                if ((rc = frag_push(tmp, (frag){id, 0, 0})) < 0)
                    return rc;
                size_t end = at + t->text_len;
                blen = base + blen - end;
                base = end;
                if (t->attr & ATTR_RSTRIP) {
                    while (blen > 0 && is_ascii_space((unsigned char)text[base])) {
                        base++;
                        blen--;
                    }
                }
            }
        }
        frag_list swap = *io;
        *io = *tmp;
        *tmp = swap;
    }
    return 0;
}

typedef struct spm_sym {
    int32_t prev, next; /* neighbours in the live chain, -1 at the ends */
    uint32_t off;       /* into the escaped text */
    uint32_t n;         /* bytes; 0 once merged into its left neighbour */
} spm_sym;

typedef struct spm_bigram {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of left + right when queued */
} spm_bigram;

typedef struct tok_state {
    const inferd_vocab *v;
    int32_t *out;
    size_t cap, n;   /* output capacity and ids produced so far */
    char *buf;       /* SPM: escaped fragment; BPE: one word in the byte alphabet */
    size_t buf_cap;  /* bytes */
    char *real;      /* BPE: the fragment as llama.cpp decodes it */
    char *subject;   /* BPE: the same, valid UTF-8 for the split patterns */
    size_t norm_cap; /* bytes of each */
    spm_sym *syms;
    size_t syms_cap;  /* symbols */
    spm_bigram *heap; /* max-heap by score, then leftmost */
    size_t heap_n, heap_cap;
    inferd_error *err;
} tok_state;

/* Grow the scratch to hold @p blen escaped bytes in @p n_sym symbols (and
 * 3 * n_sym queued pairs). The largest fragment sets the size. */
static int reserve_scratch(tok_state *st, size_t blen, size_t n_sym)
{
    if (blen > st->buf_cap) {
        char *p = inferd_realloc(st->buf, blen);
        if (!p)
            return INFERD_E_NOMEM;
        st->buf = p;
        st->buf_cap = blen;
    }
    if (n_sym > st->syms_cap) {
        spm_sym *p = inferd_realloc(st->syms, n_sym * sizeof(*p));
        if (!p)
            return INFERD_E_NOMEM;
        st->syms = p;
        st->syms_cap = n_sym;
    }
    if (3 * n_sym > st->heap_cap) {
        spm_bigram *p = inferd_realloc(st->heap, 3 * n_sym * sizeof(*p));
        if (!p)
            return INFERD_E_NOMEM;
        st->heap = p;
        st->heap_cap = 3 * n_sym;
    }
    return 0;
}

static void emit(tok_state *st, int32_t id)
{
    if (st->n < st->cap)
        st->out[st->n] = id;
    st->n++;
}

static bool bigram_before(const spm_bigram *a, const spm_bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(tok_state *st, spm_bigram b)
{
    size_t i = st->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_before(&b, &st->heap[parent]))
            break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = b;
}

static spm_bigram heap_pop(tok_state *st)
{
    spm_bigram top = st->heap[0];
    spm_bigram last = st->heap[--st->heap_n];
    size_t i = 0, n = st->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && bigram_before(&st->heap[c + 1], &st->heap[c]))
            c++;
        if (!bigram_before(&st->heap[c], &last))
            break;
        st->heap[i] = st->heap[c];
        i = c;
    }
    if (n > 0)
        st->heap[i] = last;
    return top;
}

/* Queue the merge of two neighbouring symbols if there is one: SPM merges
 * when the joined text is a token (best score first), BPE when the pair is
 * in the merge list (lowest rank first: the score is -rank, exact in a float
 * since ranks are below 2^24). Ties go to the leftmost pair in both. */
static void try_bigram(tok_state *st, int32_t left, int32_t right)
{
    float score;

    if (left < 0 || right < 0)
        return;
    const spm_sym *l = &st->syms[left];
    uint32_t size = l->n + st->syms[right].n;
    if (st->v->kind == INFERD_VOCAB_BPE) {
        int32_t rank = merge_rank(st->v, st->buf + l->off, l->n, size);
        if (rank < 0)
            return;
        score = -(float)rank;
    } else {
        int32_t id = inferd_vocab_find(st->v, st->buf + l->off, size);
        if (id < 0)
            return;
        score = st->v->tokens[id].score;
    }
    /* At most n-1 initial pairs plus two per merge: the heap was sized 3n. */
    if (st->heap_n == st->heap_cap)
        abort();
    heap_push(st, (spm_bigram){score, left, right, size});
}

/* Merge the chain of @p n_sym symbols (at least one) in st->syms, the best
 * queued pair first, as llama.cpp's SPM and BPE tokenizers do. */
static void merge_symbols(tok_state *st, size_t n_sym)
{
    st->heap_n = 0;
    for (int32_t i = 1; i < (int32_t)n_sym; i++)
        try_bigram(st, i - 1, i);
    while (st->heap_n > 0) {
        spm_bigram b = heap_pop(st);
        spm_sym *l = &st->syms[b.left], *r = &st->syms[b.right];
        /* Skip pairs that an earlier merge has changed: a live left symbol
         * only grows by absorbing its right neighbour, so unchanged sizes
         * mean an unchanged pair. */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            st->syms[r->next].prev = b.left;
        try_bigram(st, l->prev, b.left);
        try_bigram(st, b.left, l->next);
    }
}

/* SentencePiece BPE over one raw fragment, as llama.cpp's SPM tokenizer. */
static int spm_fragment(tok_state *st, const char *text, size_t len, bool space_prefix)
{
    const inferd_vocab *v = st->v;
    size_t blen = space_prefix ? 3 : 0;

    for (size_t i = 0; i < len; i++)
        blen += text[i] == ' ' ? 3 : 1;
    if (reserve_scratch(st, blen, 0) < 0)
        goto nomem;
    /* Spaces become U+2581, and so does the dummy prefix. */
    blen = 0;
    if (space_prefix) {
        memcpy(st->buf, SPACE_ESCAPE, 3);
        blen = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(st->buf + blen, SPACE_ESCAPE, 3);
            blen += 3;
        } else {
            st->buf[blen++] = text[i];
        }
    }

    /* Characters are cut by their lead byte only, after escaping: a broken
     * sequence may swallow part of an escaped space, as in llama.cpp. */
    size_t n_sym = 0;
    for (size_t off = 0; off < blen; n_sym++)
        off += spm_char_len((unsigned char)st->buf[off]);
    if (reserve_scratch(st, 0, n_sym) < 0)
        goto nomem;
    n_sym = 0;
    for (size_t off = 0; off < blen;) {
        size_t n = spm_char_len((unsigned char)st->buf[off]);
        if (n > blen - off)
            n = blen - off; /* a cut sequence at the end is one character */
        int32_t i = (int32_t)n_sym;
        st->syms[i] = (spm_sym){i - 1, off + n == blen ? -1 : i + 1, (uint32_t)off, (uint32_t)n};
        n_sym++;
        off += n;
    }

    merge_symbols(st, n_sym);

    /* Every merge makes a token, so a symbol that is not one is a single
     * unmerged character: it goes out byte by byte. */
    for (int32_t i = 0; i != -1; i = st->syms[i].next) {
        const spm_sym *s = &st->syms[i];
        int32_t id = inferd_vocab_find(v, st->buf + s->off, s->n);
        if (id >= 0) {
            emit(st, id);
            continue;
        }
        for (uint32_t k = 0; k < s->n; k++) {
            unsigned char c = (unsigned char)st->buf[s->off + k];
            id = v->byte_to_id[c] >= 0 ? v->byte_to_id[c] : v->ids[SP_UNK];
            if (id < 0)
                return inferd_fail(st->err, INFERD_E_INVALID,
                                   "byte 0x%02X has no token and the vocabulary has no "
                                   "unknown token",
                                   c);
            emit(st, id);
        }
    }
    return 0;

nomem:
    return inferd_fail(st->err, INFERD_E_NOMEM, "tokenize: no memory for a %zu-byte fragment", len);
}

/* BPE over one pre-tokenized word (@p len bytes of st->real at @p off), as
 * llama.cpp's BPE tokenizer: the bytes are written in GPT-2's byte
 * alphabet, one symbol each, and merged by rank. A resulting symbol that is
 * not a token goes out as the tokens of its single bytes that are tokens
 * (the others are dropped). */
static int bpe_word(void *ctx, size_t off, size_t len)
{
    tok_state *st = ctx;
    const inferd_vocab *v = st->v;
    const unsigned char *w = (const unsigned char *)st->real + off;
    size_t blen = 0;

    for (size_t i = 0; i < len; i++)
        blen += v->byte_enc_len[w[i]];
    if (reserve_scratch(st, blen, len) < 0)
        return inferd_fail(st->err, INFERD_E_NOMEM, "tokenize: no memory for a %zu-byte word", len);
    blen = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t k = (int32_t)i;
        uint32_t n = v->byte_enc_len[w[i]];
        memcpy(st->buf + blen, v->byte_enc[w[i]], n);
        st->syms[i] = (spm_sym){k - 1, i + 1 == len ? -1 : k + 1, (uint32_t)blen, n};
        blen += n;
    }

    /* Llama 3 and tekken take a word that is a token as it is. */
    if (v->ignore_merges) {
        int32_t id = inferd_vocab_find(v, st->buf, blen);
        if (id >= 0) {
            emit(st, id);
            return 0;
        }
    }
    merge_symbols(st, len);
    for (int32_t i = 0; i != -1; i = st->syms[i].next) {
        const spm_sym *sy = &st->syms[i];
        int32_t id = inferd_vocab_find(v, st->buf + sy->off, sy->n);
        if (id >= 0) {
            emit(st, id);
            continue;
        }
        for (uint32_t k = 0; k < sy->n; k++) {
            id = inferd_vocab_find(v, st->buf + sy->off + k, 1);
            if (id >= 0)
                emit(st, id);
        }
    }
    return 0;
}

/* A raw fragment through a BPE vocabulary: decoded as llama.cpp does, cut
 * by the pre-tokenizer, each word merged on its own. */
static int bpe_fragment(tok_state *st, const char *text, size_t len)
{
    /* A byte becomes at most U+FFFD, 3 bytes. */
    if (3 * len > st->norm_cap) {
        char *r = inferd_realloc(st->real, 3 * len);
        if (!r)
            goto nomem;
        st->real = r;
        char *s = inferd_realloc(st->subject, 3 * len);
        if (!s)
            goto nomem;
        st->subject = s;
        st->norm_cap = 3 * len;
    }
    size_t n = inferd__pretok_normalize(text, len, st->real, st->subject);
    return inferd__pretok_split(st->v->pretok, st->subject, n, bpe_word, st, st->err);

nomem:
    return inferd_fail(st->err, INFERD_E_NOMEM, "tokenize: no memory for a %zu-byte fragment", len);
}

int inferd_tokenize(const inferd_vocab *v, const char *text, size_t len, bool add_special,
                    bool parse_special, int32_t *out_ids, size_t cap, size_t *out_n,
                    inferd_error *err)
{
    frag_list frags = {0}, tmp = {0};
    tok_state st = {0};
    int rc = 0;

    if (!v || (!text && len) || (!out_ids && cap) || !out_n)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_tokenize: NULL argument");
    if (len > INFERD_TOKENIZE_MAX_BYTES)
        return inferd_fail(err, INFERD_E_INVALID, "text is %zu bytes long (at most %zu)", len,
                           INFERD_TOKENIZE_MAX_BYTES);
    st.v = v;
    st.out = out_ids;
    st.cap = cap;
    st.err = err;

    if (add_special && v->add_bos)
        emit(&st, v->ids[SP_BOS]);
    if (len > 0) {
        if ((rc = partition(v, text, len, parse_special, &frags, &tmp)) < 0) {
            rc = inferd_fail(err, rc, "tokenize: no memory for %zu bytes of text", len);
            goto done;
        }
        /* SPM: a dummy space goes before text at the start and after a
         * special token, as SentencePiece's "add dummy prefix" does per
         * sentence. */
        bool prev_special = true;
        for (size_t f = 0; f < frags.n; f++) {
            const frag *fr = &frags.items[f];
            if (fr->id >= 0) {
                emit(&st, fr->id);
                prev_special = true;
                continue;
            }
            if (v->kind == INFERD_VOCAB_BPE)
                rc = bpe_fragment(&st, text + fr->off, fr->len);
            else
                rc =
                    spm_fragment(&st, text + fr->off, fr->len, v->add_space_prefix && prev_special);
            if (rc < 0)
                goto done;
            prev_special = false;
        }
    }
    if (add_special && v->add_eos)
        emit(&st, v->ids[SP_EOS]);

    *out_n = st.n;
    if (st.n > cap)
        rc = inferd_fail(err, INFERD_E_RANGE, "the text needs %zu tokens, room for %zu", st.n, cap);
done:
    inferd_free(st.subject);
    inferd_free(st.real);
    inferd_free(st.heap);
    inferd_free(st.syms);
    inferd_free(st.buf);
    inferd_free(tmp.items);
    inferd_free(frags.items);
    return rc;
}

typedef struct piece_ends {
    size_t *ends;
    size_t cap, n;
} piece_ends;

static int collect_piece(void *ctx, size_t off, size_t len)
{
    piece_ends *pe = ctx;
    if (pe->n < pe->cap)
        pe->ends[pe->n] = off + len;
    pe->n++;
    return 0;
}

int inferd_pretokenize(const char *pre, const char *text, size_t len, size_t *out_ends, size_t cap,
                       size_t *out_n, inferd_error *err)
{
    inferd__pretok *p = NULL;
    piece_ends pe = {out_ends, cap, 0};
    int rc;

    if (!pre || (!text && len) || (!out_ends && cap) || !out_n)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_pretokenize: NULL argument");
    if (len > INFERD_TOKENIZE_MAX_BYTES)
        return inferd_fail(err, INFERD_E_INVALID, "text is %zu bytes long (at most %zu)", len,
                           INFERD_TOKENIZE_MAX_BYTES);
    const inferd__pretok_info *info = inferd__pretok_find(pre, strlen(pre));
    if (!info)
        return inferd_fail(err, INFERD_E_UNSUPPORTED, "'%.48s' is not a known pre-tokenizer", pre);
    /* Valid UTF-8 decodes to itself, so the pieces are pieces of @p text. */
    if (!utf8_valid(text, len))
        return inferd_fail(err, INFERD_E_INVALID, "inferd_pretokenize: text is not valid UTF-8");
    if ((rc = inferd__pretok_create(info, &p, err)) < 0)
        return rc;
    rc = inferd__pretok_split(p, text, len, collect_piece, &pe, err);
    inferd__pretok_destroy(p);
    if (rc < 0)
        return rc;
    *out_n = pe.n;
    if (pe.n > cap)
        return inferd_fail(err, INFERD_E_RANGE, "the text has %zu pieces, room for %zu", pe.n, cap);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Detokenizing                                                              */
/* ------------------------------------------------------------------------ */

int inferd_detokenize(const inferd_vocab *v, const int32_t *ids, size_t n_ids, bool remove_special,
                      bool unparse_special, char *out, size_t cap, size_t *out_len,
                      inferd_error *err)
{
    if (!v || (!ids && n_ids) || (!out && cap) || !out_len)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_detokenize: NULL argument");
    for (size_t i = 0; i < n_ids; i++)
        if (!id_ok(v, ids[i]))
            return inferd_fail(err, INFERD_E_INVALID,
                               "token %zu is %d, outside the vocabulary (0..%d)", i, (int)ids[i],
                               (int)v->n_tokens - 1);

    /* The dummy prefix space is dropped again, unless a BOS that is
     * removed starts the text (llama.cpp keeps the space then). */
    bool strip_space = v->add_space_prefix;
    size_t first = 0, end = n_ids;
    if (remove_special && v->add_bos && end > 0 && ids[0] == v->ids[SP_BOS]) {
        strip_space = false;
        first = 1;
    }
    if (remove_special && v->add_eos && end > first && ids[end - 1] == v->ids[SP_EOS])
        end--;

    size_t total = 0;
    bool fits = true;
    for (size_t i = first; i < end; i++) {
        size_t n;
        const char *p = piece_of(v, ids[i], unparse_special, &n);
        if (strip_space && n > 0 && p[0] == ' ') {
            p++;
            n--;
        }
        strip_space = false;
        if (fits && total + n <= cap) {
            if (n)
                memcpy(out + total, p, n);
        } else {
            fits = false;
        }
        total += n;
    }
    *out_len = total;
    if (total > cap)
        return inferd_fail(err, INFERD_E_RANGE, "the text needs %zu bytes, room for %zu", total,
                           cap);
    return 0;
}

void inferd_detok_init(inferd_detok *d, const inferd_vocab *v)
{
    memset(d, 0, sizeof(*d));
    d->vocab = v;
}

/* Output of the streaming decoder; counts only when out is NULL. */
typedef struct sink {
    char *out;
    size_t n;
} sink;

static void sink_put(sink *s, const void *p, size_t n)
{
    if (s->out)
        memcpy(s->out + s->n, p, n);
    s->n += n;
}

/* Feed one byte through the UTF-8 decoder state (pending, *np). */
static void detok_byte(unsigned char *pending, size_t *np, unsigned char c, sink *s)
{
    if (*np > 0) {
        if (utf8_continues(pending, *np, c)) {
            pending[(*np)++] = c;
            if (*np == utf8_seq_len(pending[0])) {
                sink_put(s, pending, *np);
                *np = 0;
            }
            return;
        }
        /* The held-back character cannot complete: one U+FFFD for it, and
         * this byte starts afresh. */
        sink_put(s, REPLACEMENT, 3);
        *np = 0;
    }
    size_t n = utf8_seq_len(c);
    if (n == 1) {
        sink_put(s, &c, 1);
    } else if (n == 0) {
        sink_put(s, REPLACEMENT, 3);
    } else {
        pending[0] = c;
        *np = 1;
    }
}

static void detok_run(unsigned char *pending, size_t *np, const char *p, size_t n, sink *s)
{
    for (size_t i = 0; i < n; i++)
        detok_byte(pending, np, (unsigned char)p[i], s);
}

size_t inferd_detok_push(inferd_detok *d, int32_t id, char *out, size_t cap)
{
    size_t n;

    if (!id_ok(d->vocab, id))
        return INFERD_DETOK_ERROR;
    const char *p = piece_of(d->vocab, id, d->special, &n);

    /* Dry run on a copy of the state: the exact size, so that a short
     * buffer leaves the detokenizer untouched. */
    unsigned char pending[4];
    size_t np = d->n_pending;
    sink count = {NULL, 0};
    memcpy(pending, d->pending, sizeof(pending));
    detok_run(pending, &np, p, n, &count);
    if (count.n > cap)
        return INFERD_DETOK_ERROR;

    sink s = {out, 0};
    detok_run(d->pending, &d->n_pending, p, n, &s);
    return s.n;
}

size_t inferd_detok_flush(inferd_detok *d, char *out, size_t cap)
{
    if (d->n_pending == 0)
        return 0;
    if (cap < 3)
        return INFERD_DETOK_ERROR;
    memcpy(out, REPLACEMENT, 3);
    d->n_pending = 0;
    return 3;
}
