/* Vocabulary from GGUF metadata, the SentencePiece (SPM) tokenizer and
 * detokenization, reproducing llama.cpp's token ids and special-token rules.
 * Invariants: a loaded vocabulary is immutable; every token text is valid
 * UTF-8, unique, and NUL-terminated in one blob; pieces (the bytes a token
 * renders to) are precomputed. Threads: any, on a shared vocabulary;
 * inferd_tokenize allocates its own scratch per call.
 */
#include "inferd/tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"

#define MAX_TOKENS      ((uint64_t)1 << 24) /* ids stay far inside int32_t */
#define MAX_TOKEN_BYTES ((uint64_t)1 << 16)

#define KEY_MODEL      "tokenizer.ggml.model"
#define KEY_TOKENS     "tokenizer.ggml.tokens"
#define KEY_SCORES     "tokenizer.ggml.scores"
#define KEY_TYPES      "tokenizer.ggml.token_type"
#define KEY_ADD_BOS    "tokenizer.ggml.add_bos_token"
#define KEY_ADD_EOS    "tokenizer.ggml.add_eos_token"
#define KEY_ADD_PREFIX "tokenizer.ggml.add_space_prefix"

/* Token attributes, as llama.cpp derives them from the token types. */
enum {
    ATTR_UNKNOWN      = 1 << 0,
    ATTR_UNUSED       = 1 << 1,
    ATTR_NORMAL       = 1 << 2,
    ATTR_CONTROL      = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE         = 1 << 5,
    ATTR_RSTRIP       = 1 << 8, /* drop whitespace after a matched special token */
};

/* Tokens that are matched in text before tokenizing (the special tokens). */
#define ATTR_SPECIAL_MATCH (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)
/* Tokens that render to nothing unless special rendering is asked for. */
#define ATTR_HIDDEN (ATTR_CONTROL | ATTR_UNKNOWN)

/* Special token slots. */
enum {
    SP_BOS, SP_EOS, SP_UNK, SP_PAD, SP_EOT, SP_EOM,
    SP_FIM_PRE, SP_FIM_SUF, SP_FIM_MID, SP_FIM_PAD, SP_FIM_REP, SP_FIM_SEP,
    SP_COUNT
};

typedef struct vocab_token {
    size_t text_off;    /* into vocab->text, NUL-terminated */
    size_t piece_off;   /* into vocab->pieces: rendering with special = true */
    uint32_t text_len;  /* bytes */
    uint32_t piece_len; /* bytes */
    float score;
    uint16_t attr;      /* ATTR_* */
    uint8_t type;       /* inferd_token_type as read */
    uint8_t eog;        /* 1 if it ends generation */
} vocab_token;

struct inferd_vocab {
    int32_t n_tokens;
    vocab_token *tokens;   /* (n_tokens) */
    char *text;            /* all token texts, each NUL-terminated */
    char *pieces;          /* all pieces, back to back */
    int32_t *map;          /* open-addressing text -> id table, -1 = empty */
    size_t map_mask;       /* table size - 1 (a power of two minus one) */
    int32_t byte_to_id[256];
    int32_t *special_ids;  /* tokens matched in text, longest first */
    size_t n_special;
    int32_t ids[SP_COUNT];
    size_t max_piece_len;
    bool add_bos;
    bool add_eos;
    bool add_space_prefix;
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
static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'};   /* U+FFFD */

/* The whitespace llama.cpp's isspace() sees in the "C" locale. */
static bool is_ascii_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

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

/* Texts by which llama.cpp recognises special tokens that the metadata does
 * not name; the first one present is taken. */
static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
    "<end_of_utterance>", NULL};
static const char *const EOM_TEXTS[] = {"<|eom_id|>", NULL};
static const char *const FIM_PRE_TEXTS[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>", "\xE2\x96\x81<PRE>",
    "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const FIM_SUF_TEXTS[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", "<SUF>", "\xE2\x96\x81<SUF>",
    "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const FIM_MID_TEXTS[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>", "\xE2\x96\x81<MID>",
    "<|code_middle|>", "<|middle|>", NULL};
static const char *const FIM_PAD_TEXTS[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const FIM_REP_TEXTS[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const FIM_SEP_TEXTS[] = {"<|file_sep|>", NULL};

/* Tokens that end generation because of their text. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
    "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
    "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
    "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
    "[e~[", NULL};

/* Tokens llama.cpp always renders and matches as user-defined. */
static const char *const FORCED_USER_TEXTS[] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

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
static int excerpt_len(size_t len)
{
    return len > 40 ? 40 : (int)len;
}

/* Read the array key @p key: its index, or -1 when absent (err untouched). */
static int find_array(const inferd_gguf *g, const char *key, int64_t *out_idx,
                      inferd_error *err)
{
    int64_t i = inferd_gguf_find_key(g, key);
    if (i >= 0 && inferd_gguf_kv_type(g, (uint64_t)i) != INFERD_GGUF_ARRAY)
        return inferd_fail(err, INFERD_E_FORMAT, "%s must be an array (it has type %d)", key,
                           (int)inferd_gguf_kv_type(g, (uint64_t)i));
    *out_idx = i;
    return 0;
}

static int load_model_kind(const inferd_gguf *g, inferd_error *err)
{
    inferd_gguf_str model;
    int rc = inferd_gguf_get_str(g, KEY_MODEL, &model, err);

    if (rc == INFERD_E_NOT_FOUND)
        return inferd_fail(err, INFERD_E_NOT_FOUND, "%s is not set: the file has no tokenizer",
                           KEY_MODEL);
    if (rc < 0)
        return rc;
    int n = model.len > 64 ? 64 : (int)model.len;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0)
        return 0;
    if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0)
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "tokenizer model 'gpt2' (BPE) is not supported yet");
    if ((model.len == 4 && memcmp(model.ptr, "none", 4) == 0) ||
        (model.len == 8 && memcmp(model.ptr, "no_vocab", 8) == 0))
        return inferd_fail(err, INFERD_E_NOT_FOUND, "%s is '%.*s': the file has no tokenizer",
                           KEY_MODEL, n, model.ptr);
    return inferd_fail(err, INFERD_E_UNSUPPORTED, "tokenizer model '%.*s' (%s) is not supported",
                       n, model.ptr, KEY_MODEL);
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
    v->pieces = inferd_malloc(total);
    if (!v->text || !v->pieces)
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
            return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries but %s has %d",
                               KEY_TYPES, (unsigned long long)n, KEY_TOKENS, (int)v->n_tokens);
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
        if (type == INFERD_TOKEN_BYTE &&
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
    /* SPM defaults, dropped when the vocabulary is too small for them. */
    v->ids[SP_BOS] = 1;
    v->ids[SP_EOS] = 2;
    v->ids[SP_UNK] = 0;
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
    v->add_bos = true;
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
    for (const char *const *t = FORCED_USER_TEXTS; *t; t++) {
        int32_t id = find_str(v, *t);
        if (id >= 0)
            v->tokens[id].attr = ATTR_USER_DEFINED;
    }
    for (size_t i = 0; i < sizeof(eog_slots) / sizeof(eog_slots[0]); i++)
        if (v->ids[eog_slots[i]] >= 0)
            v->tokens[v->ids[eog_slots[i]]].eog = 1;

    /* gpt-oss and solar-open end turns with <|return|>/<|call|>/<|flush|>;
     * their <|end|> only separates messages. */
    int32_t end = find_str(v, "<|end|>");
#define IS_EOG_TEXT(s) (find_str(v, (s)) >= 0 && v->tokens[find_str(v, (s))].eog)
    bool has_call = IS_EOG_TEXT("<|call|>") || IS_EOG_TEXT("<|calls|>");
    if (end >= 0 && v->tokens[end].eog && has_call &&
        (IS_EOG_TEXT("<|return|>") || IS_EOG_TEXT("<|flush|>"))) {
        v->tokens[end].eog = 0;
        v->tokens[end].attr = ATTR_USER_DEFINED;
    }
    /* Gemma 4 uses </s> as ordinary text. */
    int32_t eos_text = find_str(v, "</s>");
    if (eos_text >= 0 && v->tokens[eos_text].eog && IS_EOG_TEXT("<|tool_response>")) {
        v->tokens[eos_text].eog = 0;
        v->tokens[eos_text].attr = ATTR_NORMAL;
    }
#undef IS_EOG_TEXT
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
        return inferd_fail(err, INFERD_E_NOMEM, "%s: no memory for the special tokens",
                           KEY_TOKENS);
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

/* llama.cpp strips whitespace after Phi-3's special tokens (they are
 * followed by a newline in its chat format), recognising Phi-3 by name. */
static int apply_name_rules(inferd_vocab *v, const inferd_gguf *g, inferd_error *err)
{
    inferd_gguf_str name;
    char lower[256];
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

static void build_bytes_and_pieces(inferd_vocab *v)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        char one = (char)b;
        snprintf(name, sizeof(name), "<0x%02X>", b);
        int32_t id = find_str(v, name);
        if (id < 0)
            id = inferd_vocab_find(v, &one, 1);
        v->byte_to_id[b] = id;
    }

    size_t off = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        vocab_token *t = &v->tokens[id];
        const char *s = tok_text(v, id);
        char *dst = v->pieces + off;
        size_t n = 0;

        if (t->attr & (ATTR_HIDDEN | ATTR_USER_DEFINED)) {
            memcpy(dst, s, t->text_len);
            n = t->text_len;
        } else if (t->attr & ATTR_NORMAL) {
            for (size_t i = 0; i < t->text_len; i++) {
                if (i + 3 <= t->text_len && memcmp(s + i, SPACE_ESCAPE, 3) == 0) {
                    dst[n++] = ' ';
                    i += 2;
                } else {
                    dst[n++] = s[i];
                }
            }
        } else if (t->attr & ATTR_BYTE) {
            dst[n++] = (char)parse_byte_token(s, t->text_len);
        }
        /* Unused and undefined tokens render to nothing. */
        t->piece_off = off;
        t->piece_len = (uint32_t)n;
        if (n > v->max_piece_len)
            v->max_piece_len = n;
        off += n;
    }
}

int inferd_vocab_load(const inferd_gguf *g, inferd_vocab **out_vocab, inferd_error *err)
{
    inferd_vocab *v;
    int64_t tokens_idx = -1;
    int rc;

    if (!g || !out_vocab)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_vocab_load: NULL argument");
    if ((rc = load_model_kind(g, err)) < 0)
        return rc;
    if ((rc = find_array(g, KEY_TOKENS, &tokens_idx, err)) < 0)
        return rc;
    if (tokens_idx < 0)
        return inferd_fail(err, INFERD_E_FORMAT, "%s is missing (the list of token texts)",
                           KEY_TOKENS);
    if (inferd_gguf_kv_arr_type(g, (uint64_t)tokens_idx) != INFERD_GGUF_STRING)
        return inferd_fail(err, INFERD_E_FORMAT, "%s must be an array of strings (it holds type %d)",
                           KEY_TOKENS, (int)inferd_gguf_kv_arr_type(g, (uint64_t)tokens_idx));
    uint64_t n = inferd_gguf_kv_arr_n(g, (uint64_t)tokens_idx);
    if (n == 0 || n > MAX_TOKENS)
        return inferd_fail(err, INFERD_E_FORMAT, "%s has %llu entries (must be 1..%llu)",
                           KEY_TOKENS, (unsigned long long)n, (unsigned long long)MAX_TOKENS);

    v = inferd_calloc(1, sizeof(*v));
    if (!v)
        return inferd_fail(err, INFERD_E_NOMEM, "vocabulary: no memory");
    v->n_tokens = (int32_t)n;
    v->tokens = inferd_calloc((size_t)n, sizeof(*v->tokens));
    if (!v->tokens) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "vocabulary: no memory for %llu tokens",
                         (unsigned long long)n);
        goto fail;
    }
    if ((rc = load_texts(v, g, (uint64_t)tokens_idx, err)) < 0 ||
        (rc = load_scores(v, g, err)) < 0 || (rc = load_types(v, g, err)) < 0 ||
        (rc = build_map(v, err)) < 0)
        goto fail;
    v->add_space_prefix = true;
    if ((rc = get_flag(g, KEY_ADD_PREFIX, &v->add_space_prefix, err)) < 0 ||
        (rc = load_special_ids(v, g, err)) < 0)
        goto fail;
    derive_special(v);
    if ((rc = build_special_list(v, err)) < 0 || (rc = apply_name_rules(v, g, err)) < 0)
        goto fail;
    build_bytes_and_pieces(v);
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

static bool id_ok(const inferd_vocab *v, int32_t id)
{
    return v && id >= 0 && id < v->n_tokens;
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
    int32_t id;  /* token id, or -1 for raw text */
    size_t off;  /* raw text: byte offset in the input */
    size_t len;  /* raw text: bytes (> 0) */
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
                if (at > base && (rc = frag_push(tmp, (frag){-1, base, at - base})) < 0)
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
    size_t cap, n;       /* output capacity and ids produced so far */
    char *buf;           /* escaped text of the fragment being tokenized */
    size_t buf_cap;      /* bytes */
    spm_sym *syms;
    size_t syms_cap;     /* symbols */
    spm_bigram *heap;    /* max-heap by score, then leftmost */
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

/* Queue the merge of two neighbouring symbols if their text is a token. */
static void try_bigram(tok_state *st, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const spm_sym *l = &st->syms[left];
    uint32_t size = l->n + st->syms[right].n;
    int32_t id = inferd_vocab_find(st->v, st->buf + l->off, size);
    if (id < 0)
        return;
    /* At most n-1 initial pairs plus two per merge: the heap was sized 3n. */
    if (st->heap_n == st->heap_cap)
        abort();
    heap_push(st, (spm_bigram){st->v->tokens[id].score, left, right, size});
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

    st->heap_n = 0;
    for (int32_t i = 1; i < (int32_t)n_sym; i++)
        try_bigram(st, i - 1, i);
    while (st->heap_n > 0) {
        spm_bigram b = heap_pop(st);
        spm_sym *l = &st->syms[b.left], *r = &st->syms[b.right];
        /* Skip pairs that an earlier merge has changed. */
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
                                   "unknown token", c);
            emit(st, id);
        }
    }
    return 0;

nomem:
    return inferd_fail(st->err, INFERD_E_NOMEM, "tokenize: no memory for a %zu-byte fragment",
                       len);
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
        /* A dummy space goes before text at the start and after a special
         * token, as SentencePiece's "add dummy prefix" does per sentence. */
        bool prev_special = true;
        for (size_t f = 0; f < frags.n; f++) {
            const frag *fr = &frags.items[f];
            if (fr->id >= 0) {
                emit(&st, fr->id);
                prev_special = true;
                continue;
            }
            rc = spm_fragment(&st, text + fr->off, fr->len, v->add_space_prefix && prev_special);
            if (rc < 0)
                goto done;
            prev_special = false;
        }
    }
    if (add_special && v->add_eos)
        emit(&st, v->ids[SP_EOS]);

    *out_n = st.n;
    if (st.n > cap)
        rc = inferd_fail(err, INFERD_E_RANGE, "the text needs %zu tokens, room for %zu", st.n,
                         cap);
done:
    inferd_free(st.heap);
    inferd_free(st.syms);
    inferd_free(st.buf);
    inferd_free(tmp.items);
    inferd_free(frags.items);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Detokenizing                                                              */
/* ------------------------------------------------------------------------ */

int inferd_detokenize(const inferd_vocab *v, const int32_t *ids, size_t n_ids,
                      bool remove_special, bool unparse_special, char *out, size_t cap,
                      size_t *out_len, inferd_error *err)
{
    if (!v || (!ids && n_ids) || (!out && cap) || !out_len)
        return inferd_fail(err, INFERD_E_INVALID, "inferd_detokenize: NULL argument");
    for (size_t i = 0; i < n_ids; i++)
        if (!id_ok(v, ids[i]))
            return inferd_fail(err, INFERD_E_INVALID,
                               "token %zu is %d, outside the vocabulary (0..%d)", i,
                               (int)ids[i], (int)v->n_tokens - 1);

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
