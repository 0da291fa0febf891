/* GGUF reader and writer: the real fixtures, a writer round trip over every
 * value kind, hand-made malformed files (each must fail with a precise
 * message, never crash), every truncation of a small file, and allocation
 * failure injection. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/gguf.h"

#define MODEL INFERD_FIXTURES "/models/stories260K.gguf"
#define VOCAB INFERD_FIXTURES "/vocab/ggml-vocab-llama-spm.gguf"
#define P62 (UINT64_C(1) << 62)

static char tmp_dir[] = "/tmp/inferd-test-gguf-XXXXXX";

/* --- helpers ------------------------------------------------------------------ */

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
}

static int gguf_str_eq(inferd_gguf_str s, const char *want)
{
    return s.ptr && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static uint8_t *read_whole(const char *path, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *out_len = (size_t)n;
    return p;
}

/* A growing byte buffer to hand-assemble GGUF files. */
typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void b_bytes(buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void b_u8(buf *b, uint8_t v) { b_bytes(b, &v, 1); }

static void b_u32(buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    b_bytes(b, x, 4);
}

static void b_u64(buf *b, uint64_t v)
{
    b_u32(b, (uint32_t)v);
    b_u32(b, (uint32_t)(v >> 32));
}

static void b_strn(buf *b, const char *s, size_t n)
{
    b_u64(b, n);
    b_bytes(b, s, n);
}

static void b_str(buf *b, const char *s) { b_strn(b, s, strlen(s)); }

static void b_header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b_bytes(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}

static void b_kv_u32(buf *b, const char *key, uint32_t v)
{
    b_str(b, key);
    b_u32(b, INFERD_GGUF_U32);
    b_u32(b, v);
}

static void b_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        b_u64(b, ne[d]);
    b_u32(b, type);
    b_u64(b, offset);
}

static void b_pad(buf *b, size_t align)
{
    while (b->len % align)
        b_u8(b, 0);
}

static void b_zeros(buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_u8(b, 0);
}

/* Open @p b as an exactly-sized heap copy (so ASan sees any over-read) and
 * expect failure @p code with @p want in the message. */
static void expect_fail(const buf *b, int code, const char *want)
{
    uint8_t *copy = malloc(b->len ? b->len : 1);
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    int rc;

    assert_non_null(copy);
    memcpy(copy, b->p, b->len);
    rc = inferd_gguf_open_memory(copy, b->len, &g, &err);
    if (rc != code || !strstr(err.msg, want))
        fail_msg("expected %d with '%s', got %d: '%s'", code, want, rc, err.msg);
    assert_null(g);
    assert_int_equal(err.code, code);
    free(copy);
}

static inferd_gguf *expect_open(const buf *b)
{
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    int rc = inferd_gguf_open_memory(b->p, b->len, &g, &err);
    if (rc != 0)
        fail_msg("open failed: %d '%s'", rc, err.msg);
    return g;
}

/* One F32 tensor "t" of 4 floats with the given header tweaks. */
static void one_tensor_file(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                            uint32_t type, uint64_t offset, size_t data_len)
{
    b_header(b, 3, 1, 0);
    b_tensor(b, name, n_dims, ne, type, offset);
    b_pad(b, 32);
    b_zeros(b, data_len);
}

/* --- fixtures ---------------------------------------------------------------------- */

static void test_gguf_reads_stories260k(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    inferd_gguf_str s;
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    int64_t ki;

    assert_int_equal(inferd_gguf_open(MODEL, &g, &err), 0);
    assert_int_equal(inferd_gguf_version(g), 3);
    assert_int_equal(inferd_gguf_alignment(g), 32);
    assert_int_equal(inferd_gguf_n_tensors(g), 48);
    assert_int_equal(inferd_gguf_n_kv(g), 19);
    assert_int_equal(inferd_gguf_data_offset(g) % 32, 0);

    assert_int_equal(inferd_gguf_get_str(g, "general.architecture", &s, &err), 0);
    assert_true(gguf_str_eq(s, "llama"));
    assert_int_equal(inferd_gguf_get_u32(g, "llama.embedding_length", &u32, &err), 0);
    assert_int_equal(u32, 64);
    assert_int_equal(inferd_gguf_get_u32(g, "llama.block_count", &u32, &err), 0);
    assert_int_equal(u32, 5);
    assert_int_equal(inferd_gguf_get_u64(g, "llama.context_length", &u64, &err), 0);
    assert_int_equal(u64, 128);
    assert_int_equal(inferd_gguf_get_i64(g, "llama.attention.head_count_kv", &i64, &err), 0);
    assert_int_equal(i64, 4);
    assert_int_equal(inferd_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err), 0);
    assert_true(fabsf(f - 1e-5f) < 1e-9f);

    ki = inferd_gguf_find_key(g, "tokenizer.ggml.tokens");
    assert_true(ki >= 0);
    assert_true(gguf_str_eq(inferd_gguf_kv_key(g, (uint64_t)ki), "tokenizer.ggml.tokens"));
    assert_int_equal(inferd_gguf_kv_type(g, (uint64_t)ki), INFERD_GGUF_ARRAY);
    assert_int_equal(inferd_gguf_kv_arr_type(g, (uint64_t)ki), INFERD_GGUF_STRING);
    assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)ki), 512);
    assert_null(inferd_gguf_kv_arr_data(g, (uint64_t)ki));
    assert_true(gguf_str_eq(inferd_gguf_kv_arr_str(g, (uint64_t)ki, 0), "<unk>"));
    assert_true(gguf_str_eq(inferd_gguf_kv_arr_str(g, (uint64_t)ki, 1), "<s>"));
    assert_null(inferd_gguf_kv_arr_str(g, (uint64_t)ki, 512).ptr);

    ki = inferd_gguf_find_key(g, "tokenizer.ggml.token_type");
    assert_true(ki >= 0);
    assert_int_equal(inferd_gguf_kv_arr_type(g, (uint64_t)ki), INFERD_GGUF_I32);
    {
        int32_t tt[2];
        memcpy(tt, inferd_gguf_kv_arr_data(g, (uint64_t)ki), sizeof(tt));
        assert_int_equal(tt[0], 2); /* <unk>: unknown */
        assert_int_equal(tt[1], 3); /* <s>: control */
    }
    assert_int_equal(inferd_gguf_find_key(g, "no.such.key"), -1);
    assert_int_equal(inferd_gguf_find_key(g, ""), -1);

    const inferd_gguf_tensor *t = inferd_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, INFERD_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->n_elems, 64 * 512);
    assert_int_equal(t->size_bytes, 64 * 512 * 4);
    assert_ptr_equal(t->data, (const uint8_t *)inferd_gguf_file_data(g) +
                                  inferd_gguf_data_offset(g) + t->offset);
    assert_ptr_equal(t, inferd_gguf_tensor_at(g, 0));
    assert_null(inferd_gguf_tensor_at(g, 48));
    assert_null(inferd_gguf_find_tensor(g, "token_embd"));
    assert_non_null(inferd_gguf_find_tensor(g, "blk.4.ffn_down.weight"));
    assert_int_equal(inferd_gguf_find_tensor(g, "blk.4.ffn_down.weight")->ne[0], 172);
    inferd_gguf_close(g);
}

/* Every bundled file opens and every tensor lies inside it. */
static void test_gguf_reads_all_fixtures(void **state)
{
    (void)state;
    static const char *const files[] = {
        "models/small-q8_0.gguf",
        "models/stories260K-bf16.gguf",
        "models/stories260K-f16.gguf",
        "models/stories260K-ff192-q4_0.gguf",
        "models/stories260K-ff192-q8_0.gguf",
        "models/stories260K-ff192.gguf",
        "models/stories260K-q4_k_m.gguf",
        "models/stories260K.gguf",
        "vocab/ggml-vocab-llama-spm.gguf",
        "vocab/ggml-vocab-phi-3.gguf",
    };
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        char path[512];
        inferd_error err = {0};
        inferd_gguf *g = NULL;

        snprintf(path, sizeof(path), "%s/%s", INFERD_FIXTURES, files[f]);
        if (inferd_gguf_open(path, &g, &err) != 0)
            fail_msg("%s: %s", path, err.msg);
        const uint8_t *base = inferd_gguf_file_data(g);
        for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++) {
            const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
            assert_true((const uint8_t *)t->data >= base);
            assert_true((const uint8_t *)t->data + t->size_bytes <=
                        base + inferd_gguf_file_size(g));
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
            assert_ptr_equal(inferd_gguf_find_tensor(g, name), t);
        }
        inferd_gguf_close(g);
    }
}

static void test_gguf_reads_vocab_only(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    inferd_gguf_str s;
    bool b;

    assert_int_equal(inferd_gguf_open(VOCAB, &g, &err), 0);
    assert_int_equal(inferd_gguf_n_tensors(g), 0);
    assert_null(inferd_gguf_tensor_at(g, 0));
    assert_null(inferd_gguf_find_tensor(g, "token_embd.weight"));
    assert_int_equal(inferd_gguf_get_str(g, "tokenizer.ggml.model", &s, &err), 0);
    assert_true(gguf_str_eq(s, "llama"));
    assert_int_equal(inferd_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, &err), 0);
    assert_true(b);
    inferd_gguf_close(g);
}

static void test_gguf_open_errors(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    char path[512];
    FILE *f;

    assert_int_equal(inferd_gguf_open("/nonexistent/dir/model.gguf", &g, &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/model.gguf"));
    assert_int_equal(err.sys_errno, ENOENT);
    assert_null(g);

    assert_int_equal(inferd_gguf_open(tmp_dir, &g, &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "is not a regular file"));

    tmp_path(path, sizeof(path), "empty.gguf");
    f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(inferd_gguf_open(path, &g, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "truncated at offset 0 reading header magic"));

    tmp_path(path, sizeof(path), "short.gguf");
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite("GGUF\3\0\0\0", 1, 8, f), 8);
    fclose(f);
    assert_int_equal(inferd_gguf_open(path, &g, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "truncated at offset 8 reading header n_tensors"));
    assert_null(g);

    assert_int_equal(inferd_gguf_open_memory(NULL, 10, &g, &err), INFERD_E_INVALID);
}

/* --- writer ------------------------------------------------------------------------- */

typedef struct fill_state {
    uint8_t seed;
    int calls;
    int fail;
} fill_state;

static int fill_pattern(void *ctx, void *dst, uint64_t size_bytes, inferd_error *err)
{
    fill_state *fs = ctx;
    fs->calls++;
    if (fs->fail)
        return inferd_fail(err, INFERD_E_CANCELLED, "fill: asked to fail");
    for (uint64_t i = 0; i < size_bytes; i++)
        ((uint8_t *)dst)[i] = (uint8_t)(fs->seed + i * 7);
    return 0;
}

static void check_pattern(const void *data, uint64_t n, uint8_t seed)
{
    for (uint64_t i = 0; i < n; i++)
        if (((const uint8_t *)data)[i] != (uint8_t)(seed + i * 7))
            fail_msg("pattern mismatch at byte %llu", (unsigned long long)i);
}

static void test_gguf_writer_round_trip(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    inferd_gguf *g = NULL;
    char path[512];
    fill_state fs = {0x5a, 0, 0};
    const uint8_t a_u8[] = {0, 1, 255};
    const int8_t a_i8[] = {-128, 0, 127};
    const uint16_t a_u16[] = {0, 65535};
    const int16_t a_i16[] = {-32768, 32767};
    const uint32_t a_u32[] = {7, 4000000000u};
    const int32_t a_i32[] = {-1, 2, INT32_MIN};
    const float a_f32[] = {1.5f, -0.25f};
    const uint8_t a_bool[] = {1, 0, 1};
    const uint64_t a_u64[] = {UINT64_MAX, 3};
    const int64_t a_i64[] = {INT64_MIN, -5};
    const double a_f64[] = {3.141592653589793, -1e300};
    const char *const strs[] = {"hello", "", "h\xc3\xa9llo \xe2\x96\x81", "<0x0A>"};
    float t_f32[6] = {1, 2, 3, 4, 5, 6};
    uint16_t t_f16[5] = {0x3c00, 0x4000, 0, 0x8000, 0x7bff};
    int32_t t_i32[7] = {1, -2, 3, -4, 5, -6, 7};
    const uint64_t ne_f32[] = {3, 2}, ne_f16[] = {5}, ne_q8[] = {64, 2, 1, 3}, ne_q4k[] = {256},
                   ne_i32[] = {7};

    tmp_path(path, sizeof(path), "round.gguf");
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "k.u32", 4000000000u, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_i32(w, "k.i32", -7, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_u64(w, "k.u64", UINT64_MAX, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_f32(w, "k.f32", 0.125f, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_bool(w, "k.bool", true, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_bool(w, "k.false", false, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_str(w, "k.empty", "", &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.u8", INFERD_GGUF_U8, a_u8, 3, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.i8", INFERD_GGUF_I8, a_i8, 3, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.u16", INFERD_GGUF_U16, a_u16, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.i16", INFERD_GGUF_I16, a_i16, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.u32", INFERD_GGUF_U32, a_u32, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.i32", INFERD_GGUF_I32, a_i32, 3, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.f32", INFERD_GGUF_F32, a_f32, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.bool", INFERD_GGUF_BOOL, a_bool, 3, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.u64", INFERD_GGUF_U64, a_u64, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.i64", INFERD_GGUF_I64, a_i64, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.f64", INFERD_GGUF_F64, a_f64, 2, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.empty", INFERD_GGUF_U32, NULL, 0, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr_str(w, "a.str", strs, 4, &err), 0);

    /* Misuse is refused without changing the description. */
    assert_int_equal(inferd_gguf_writer_set_u32(w, "k.u32", 1, &err), INFERD_E_EXISTS);
    assert_non_null(strstr(err.msg, "k.u32"));
    assert_int_equal(inferd_gguf_writer_set_arr(w, "a.bad", INFERD_GGUF_STRING, strs, 1, &err),
                     INFERD_E_INVALID);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "", 1, &err), INFERD_E_INVALID);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "bad\xff", 1, &err), INFERD_E_INVALID);

    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.f32", INFERD_DTYPE_F32, 2, ne_f32, t_f32,
                                                   NULL, NULL, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.f16", INFERD_DTYPE_F16, 1, ne_f16, t_f16,
                                                   NULL, NULL, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.q8_0", INFERD_DTYPE_Q8_0, 4, ne_q8, NULL,
                                                   fill_pattern, &fs, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.q4_k", INFERD_DTYPE_Q4_K, 1, ne_q4k, NULL,
                                                   fill_pattern, &fs, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.i32", INFERD_DTYPE_I32, 1, ne_i32, t_i32,
                                                   NULL, NULL, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.f32", INFERD_DTYPE_F32, 1, ne_f16, t_f32,
                                                   NULL, NULL, &err),
                     INFERD_E_EXISTS);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.bad", INFERD_DTYPE_Q4_0, 1, ne_f16, t_f32,
                                                   NULL, NULL, &err),
                     INFERD_E_INVALID);
    assert_non_null(strstr(err.msg, "row length 5 is not a multiple of the Q4_0 block size 32"));
    assert_int_equal(
        inferd_gguf_writer_add_tensor(w, "t.bad", 99, 1, ne_f16, t_f32, NULL, NULL, &err),
        INFERD_E_INVALID);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.bad", INFERD_DTYPE_F32, 5, ne_q8, t_f32,
                                                   NULL, NULL, &err),
                     INFERD_E_INVALID);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "t.bad", INFERD_DTYPE_F32, 1, ne_f16, NULL,
                                                   NULL, NULL, &err),
                     INFERD_E_INVALID);

    assert_int_equal(inferd_gguf_writer_write(w, path, &err), 0);
    assert_int_equal(fs.calls, 2);
    inferd_gguf_writer_destroy(w);

    assert_int_equal(inferd_gguf_open(path, &g, &err), 0);
    assert_int_equal(inferd_gguf_version(g), 3);
    assert_int_equal(inferd_gguf_alignment(g), 32);
    assert_int_equal(inferd_gguf_n_kv(g), 21);
    assert_int_equal(inferd_gguf_file_size(g) % 32, 0);
    assert_true(gguf_str_eq(inferd_gguf_kv_key(g, 0), "general.architecture"));

    /* Scalars and the typed getters' conversions. */
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    bool b;
    inferd_gguf_str s;
    assert_int_equal(inferd_gguf_get_u32(g, "k.u32", &u32, &err), 0);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(inferd_gguf_get_i64(g, "k.u32", &i64, &err), 0);
    assert_int_equal(i64, 4000000000);
    assert_int_equal(inferd_gguf_get_i64(g, "k.i32", &i64, &err), 0);
    assert_int_equal(i64, -7);
    assert_int_equal(inferd_gguf_get_f32(g, "k.i32", &f, &err), 0);
    assert_true(f == -7.0f);
    assert_int_equal(inferd_gguf_get_u64(g, "k.u64", &u64, &err), 0);
    assert_true(u64 == UINT64_MAX);
    assert_int_equal(inferd_gguf_get_f32(g, "k.f32", &f, &err), 0);
    assert_true(f == 0.125f);
    assert_int_equal(inferd_gguf_get_bool(g, "k.bool", &b, &err), 0);
    assert_true(b);
    assert_int_equal(inferd_gguf_get_bool(g, "k.false", &b, &err), 0);
    assert_false(b);
    assert_int_equal(inferd_gguf_get_str(g, "k.empty", &s, &err), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(inferd_gguf_kv_type(g, (uint64_t)inferd_gguf_find_key(g, "k.i32")),
                     INFERD_GGUF_I32);
    {
        const void *d = inferd_gguf_kv_data(g, (uint64_t)inferd_gguf_find_key(g, "k.i32"));
        int32_t v;
        assert_non_null(d);
        memcpy(&v, d, 4);
        assert_int_equal(v, -7);
        assert_null(inferd_gguf_kv_data(g, (uint64_t)inferd_gguf_find_key(g, "a.str")));
    }

    u32 = 99;
    assert_int_equal(inferd_gguf_get_u32(g, "k.i32", &u32, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "key 'k.i32' value -7 (i32) does not fit u32"));
    assert_int_equal(u32, 99);
    assert_int_equal(inferd_gguf_get_u32(g, "k.u64", &u32, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "does not fit u32"));
    assert_int_equal(inferd_gguf_get_i64(g, "k.u64", &i64, &err), INFERD_E_FORMAT);
    assert_int_equal(inferd_gguf_get_str(g, "k.u32", &s, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "key 'k.u32' has type u32, expected string"));
    assert_int_equal(inferd_gguf_get_u32(g, "general.architecture", &u32, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "has type string, expected u32"));
    assert_int_equal(inferd_gguf_get_bool(g, "k.u32", &b, &err), INFERD_E_FORMAT);
    assert_int_equal(inferd_gguf_get_f32(g, "a.f32", &f, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "has type array, expected f32"));
    inferd_error untouched = {0};
    assert_int_equal(inferd_gguf_get_u32(g, "nope", &u32, &untouched), INFERD_E_NOT_FOUND);
    assert_int_equal(untouched.code, 0);

    /* Arrays of every fixed-size type come back byte for byte. */
    static const struct {
        const char *key;
        inferd_gguf_type type;
        uint64_t n;
        size_t bytes;
    } arrs[] = {
        {"a.u8", INFERD_GGUF_U8, 3, 3},    {"a.i8", INFERD_GGUF_I8, 3, 3},
        {"a.u16", INFERD_GGUF_U16, 2, 4},  {"a.i16", INFERD_GGUF_I16, 2, 4},
        {"a.u32", INFERD_GGUF_U32, 2, 8},  {"a.i32", INFERD_GGUF_I32, 3, 12},
        {"a.f32", INFERD_GGUF_F32, 2, 8},  {"a.bool", INFERD_GGUF_BOOL, 3, 3},
        {"a.u64", INFERD_GGUF_U64, 2, 16}, {"a.i64", INFERD_GGUF_I64, 2, 16},
        {"a.f64", INFERD_GGUF_F64, 2, 16}, {"a.empty", INFERD_GGUF_U32, 0, 0},
    };
    const void *want[] = {a_u8,  a_i8,   a_u16, a_i16, a_u32, a_i32,
                          a_f32, a_bool, a_u64, a_i64, a_f64, a_u32};
    for (size_t i = 0; i < sizeof(arrs) / sizeof(arrs[0]); i++) {
        int64_t k = inferd_gguf_find_key(g, arrs[i].key);
        assert_true(k >= 0);
        assert_int_equal(inferd_gguf_kv_type(g, (uint64_t)k), INFERD_GGUF_ARRAY);
        assert_int_equal(inferd_gguf_kv_arr_type(g, (uint64_t)k), arrs[i].type);
        assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)k), arrs[i].n);
        assert_non_null(inferd_gguf_kv_arr_data(g, (uint64_t)k));
        assert_memory_equal(inferd_gguf_kv_arr_data(g, (uint64_t)k), want[i], arrs[i].bytes);
    }
    int64_t ks = inferd_gguf_find_key(g, "a.str");
    assert_true(ks >= 0);
    assert_int_equal(inferd_gguf_kv_arr_type(g, (uint64_t)ks), INFERD_GGUF_STRING);
    assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)ks), 4);
    for (uint64_t j = 0; j < 4; j++)
        assert_true(gguf_str_eq(inferd_gguf_kv_arr_str(g, (uint64_t)ks, j), strs[j]));

    /* Tensors: types, dims, alignment, bytes. */
    assert_int_equal(inferd_gguf_n_tensors(g), 5);
    const inferd_gguf_tensor *t = inferd_gguf_find_tensor(g, "t.f32");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[1], 2);
    assert_memory_equal(t->data, t_f32, sizeof(t_f32));
    t = inferd_gguf_find_tensor(g, "t.f16");
    assert_int_equal(t->type, INFERD_DTYPE_F16);
    assert_int_equal(t->size_bytes, 10);
    assert_memory_equal(t->data, t_f16, sizeof(t_f16));
    t = inferd_gguf_find_tensor(g, "t.q8_0");
    assert_int_equal(t->type, INFERD_DTYPE_Q8_0);
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->ne[3], 3);
    assert_int_equal(t->n_elems, 64 * 2 * 3);
    assert_int_equal(t->size_bytes, 2 * 2 * 3 * 34);
    check_pattern(t->data, t->size_bytes, 0x5a);
    t = inferd_gguf_find_tensor(g, "t.q4_k");
    assert_int_equal(t->size_bytes, 144);
    check_pattern(t->data, t->size_bytes, 0x5a);
    t = inferd_gguf_find_tensor(g, "t.i32");
    assert_memory_equal(t->data, t_i32, sizeof(t_i32));
    for (uint64_t i = 0; i < 5; i++) {
        t = inferd_gguf_tensor_at(g, i);
        assert_int_equal(t->offset % 32, 0);
        assert_int_equal(((uintptr_t)t->data - (uintptr_t)inferd_gguf_file_data(g)) % 32, 0);
    }
    inferd_gguf_close(g);
}

static void test_gguf_writer_alignment(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    inferd_gguf *g = NULL;
    char path[512];
    float x[3] = {1, 2, 3};
    const uint64_t ne[] = {3};

    tmp_path(path, sizeof(path), "align.gguf");
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "general.alignment", 64, &err), 0);
    assert_int_equal(
        inferd_gguf_writer_add_tensor(w, "a", INFERD_DTYPE_F32, 1, ne, x, NULL, NULL, &err), 0);
    assert_int_equal(
        inferd_gguf_writer_add_tensor(w, "b", INFERD_DTYPE_F32, 1, ne, x, NULL, NULL, &err), 0);
    assert_int_equal(inferd_gguf_writer_write(w, path, &err), 0);
    inferd_gguf_writer_destroy(w);

    assert_int_equal(inferd_gguf_open(path, &g, &err), 0);
    assert_int_equal(inferd_gguf_alignment(g), 64);
    assert_int_equal(inferd_gguf_data_offset(g) % 64, 0);
    assert_int_equal(inferd_gguf_find_tensor(g, "b")->offset, 64);
    assert_memory_equal(inferd_gguf_find_tensor(g, "b")->data, x, sizeof(x));
    inferd_gguf_close(g);

    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "general.alignment", 48, &err), 0);
    assert_int_equal(inferd_gguf_writer_write(w, path, &err), INFERD_E_INVALID);
    assert_non_null(strstr(err.msg, "48 is not a power of two"));
    inferd_gguf_writer_destroy(w);
}

/* A failing fill aborts the write and leaves neither the target nor a
 * temporary file behind; an unwritable directory gives INFERD_E_IO. */
static void test_gguf_writer_failures(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    fill_state fs = {1, 0, 1};
    const uint64_t ne[] = {32};
    char path[512];
    DIR *d;
    struct dirent *e;

    tmp_path(path, sizeof(path), "fail.gguf");
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_add_tensor(w, "a", INFERD_DTYPE_F32, 1, ne, NULL,
                                                   fill_pattern, &fs, &err),
                     0);
    assert_int_equal(inferd_gguf_writer_write(w, path, &err), INFERD_E_CANCELLED);
    assert_string_equal(err.msg, "fill: asked to fail");
    assert_int_equal(access(path, F_OK), -1);
    d = opendir(tmp_dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, "fail.gguf"));
    closedir(d);

    assert_int_equal(inferd_gguf_writer_write(w, "/nonexistent/dir/x.gguf", &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.gguf"));
    inferd_gguf_writer_destroy(w);
    inferd_gguf_writer_destroy(NULL);
    inferd_gguf_close(NULL);
}

/* copy_kv brings over every kind of value, string arrays and nested arrays
 * included, byte for byte. */
static void test_gguf_writer_copy_kv(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    inferd_gguf *src = NULL, *g = NULL, *nested = NULL;
    char path[512];
    buf b = {0};

    assert_int_equal(inferd_gguf_open(VOCAB, &src, &err), 0);
    /* A file with a nested array [[1,2],[3]] of u16 and an i8 scalar. */
    b_header(&b, 3, 0, 2);
    b_str(&b, "x.nested");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u64(&b, 2);
    b_u32(&b, INFERD_GGUF_U16);
    b_u64(&b, 2);
    b_u32(&b, 0x00020001);
    b_u32(&b, INFERD_GGUF_U16);
    b_u64(&b, 1);
    b_bytes(&b, "\3\0", 2);
    b_str(&b, "x.i8");
    b_u32(&b, INFERD_GGUF_I8);
    b_u8(&b, 0xfe);
    nested = expect_open(&b);

    tmp_path(path, sizeof(path), "copy.gguf");
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(inferd_gguf_writer_copy_kv(w, src, "tokenizer.", &err), 0);
    assert_int_equal(inferd_gguf_writer_copy_kv(w, nested, NULL, &err), 0);
    assert_int_equal(inferd_gguf_writer_copy_kv(w, nested, "", &err), INFERD_E_EXISTS);
    assert_int_equal(inferd_gguf_writer_write(w, path, &err), 0);
    inferd_gguf_writer_destroy(w);

    assert_int_equal(inferd_gguf_open(path, &g, &err), 0);
    uint64_t n_tok = 0;
    for (uint64_t i = 0; i < inferd_gguf_n_kv(src); i++) {
        inferd_gguf_str k = inferd_gguf_kv_key(src, i);
        char key[256];
        int64_t j;
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0)
            continue;
        n_tok++;
        snprintf(key, sizeof(key), "%.*s", (int)k.len, k.ptr);
        j = inferd_gguf_find_key(g, key);
        assert_true(j >= 0);
        assert_int_equal(inferd_gguf_kv_type(g, (uint64_t)j), inferd_gguf_kv_type(src, i));
        if (inferd_gguf_kv_type(src, i) == INFERD_GGUF_ARRAY &&
            inferd_gguf_kv_arr_type(src, i) == INFERD_GGUF_STRING) {
            uint64_t n = inferd_gguf_kv_arr_n(src, i);
            assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)j), n);
            for (uint64_t e = 0; e < n; e++) {
                inferd_gguf_str x = inferd_gguf_kv_arr_str(src, i, e);
                inferd_gguf_str y = inferd_gguf_kv_arr_str(g, (uint64_t)j, e);
                assert_int_equal(x.len, y.len);
                assert_memory_equal(x.ptr, y.ptr, x.len);
            }
        }
    }
    assert_true(n_tok >= 5);
    assert_int_equal(inferd_gguf_n_kv(g), 1 + n_tok + 2);
    assert_int_equal(inferd_gguf_find_key(g, "general.name"), -1);
    int64_t kn = inferd_gguf_find_key(g, "x.nested");
    assert_true(kn >= 0);
    assert_int_equal(inferd_gguf_kv_arr_type(g, (uint64_t)kn), INFERD_GGUF_ARRAY);
    assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)kn), 2);
    assert_null(inferd_gguf_kv_arr_data(g, (uint64_t)kn));
    int64_t i8 = 0;
    assert_int_equal(inferd_gguf_get_i64(g, "x.i8", &i8, &err), 0);
    assert_int_equal(i8, -2);

    inferd_gguf_close(g);
    inferd_gguf_close(nested);
    inferd_gguf_close(src);
    free(b.p);
}

/* --- malformed files ------------------------------------------------------------------ */

/* Every proper prefix of a writer-made file fails cleanly, except those that
 * only cut the padding after the last tensor's bytes. */
static void test_gguf_rejects_every_truncation(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    inferd_gguf *g = NULL;
    char path[512];
    const char *const strs[] = {"a", "bc", ""};
    const uint32_t arr[] = {1, 2, 3};
    const uint64_t ne_a[] = {2, 3}, ne_b[] = {32};
    float fa[6] = {0};
    uint8_t qb[34] = {0};
    uint8_t *file;
    size_t len;
    uint64_t need_end = 0;

    tmp_path(path, sizeof(path), "trunc.gguf");
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_str(w, "general.architecture", "llama", &err), 0);
    assert_int_equal(inferd_gguf_writer_set_u32(w, "n", 5, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr(w, "arr", INFERD_GGUF_U32, arr, 3, &err), 0);
    assert_int_equal(inferd_gguf_writer_set_arr_str(w, "strs", strs, 3, &err), 0);
    assert_int_equal(
        inferd_gguf_writer_add_tensor(w, "a", INFERD_DTYPE_F32, 2, ne_a, fa, NULL, NULL, &err), 0);
    assert_int_equal(
        inferd_gguf_writer_add_tensor(w, "b", INFERD_DTYPE_Q8_0, 1, ne_b, qb, NULL, NULL, &err), 0);
    assert_int_equal(inferd_gguf_writer_write(w, path, &err), 0);
    inferd_gguf_writer_destroy(w);

    file = read_whole(path, &len);
    assert_int_equal(inferd_gguf_open_memory(file, len, &g, &err), 0);
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
        uint64_t end = inferd_gguf_data_offset(g) + t->offset + t->size_bytes;
        need_end = end > need_end ? end : need_end;
    }
    inferd_gguf_close(g);
    assert_true(need_end < len);

    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        int rc;
        assert_non_null(copy);
        memcpy(copy, file, n);
        g = NULL;
        memset(&err, 0, sizeof(err));
        rc = inferd_gguf_open_memory(copy, n, &g, &err);
        if (n >= need_end) {
            if (rc != 0)
                fail_msg("prefix %zu: %s", n, err.msg);
            inferd_gguf_close(g);
        } else {
            if (rc != INFERD_E_FORMAT || strncmp(err.msg, "gguf: ", 6) != 0)
                fail_msg("prefix %zu of %zu: rc %d '%s'", n, len, rc, err.msg);
            assert_null(g);
        }
        free(copy);
    }
    free(file);
}

static void test_gguf_rejects_bad_magic(void **state)
{
    (void)state;
    buf b = {0};
    b_bytes(&b, "GGML", 4);
    b_u32(&b, 3);
    b_u64(&b, 0);
    b_u64(&b, 0);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: bad magic 0x4c4d4747 at offset 0");
    free(b.p);
}

static void test_gguf_rejects_versions(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 1, 0, 0);
    expect_fail(&b, INFERD_E_UNSUPPORTED, "GGUF version 1 is not supported");
    b.len = 0;
    b_header(&b, 4, 0, 0);
    expect_fail(&b, INFERD_E_UNSUPPORTED, "unknown GGUF version 4");
    b.len = 0;
    b_header(&b, 0, 0, 0);
    expect_fail(&b, INFERD_E_UNSUPPORTED, "unknown GGUF version 0");
    b.len = 0;
    b_header(&b, 0x03000000u, 0, 0);
    expect_fail(&b, INFERD_E_UNSUPPORTED, "big-endian");

    /* Version 2 has the same layout and is accepted. */
    b.len = 0;
    b_header(&b, 2, 0, 1);
    b_kv_u32(&b, "x", 1);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_version(g), 2);
    inferd_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_unknown_kv_type(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 3, 0, 1);
    b_str(&b, "x");
    b_u32(&b, 99);
    b_u32(&b, 0);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: unknown value type 99 for key 'x' at offset 33");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "arr");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, 13);
    b_u64(&b, 0);
    expect_fail(&b, INFERD_E_FORMAT, "unknown array element type 13 for key 'arr'");
    free(b.p);
}

static void test_gguf_rejects_unknown_tensor_type(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {4};

    one_tensor_file(&b, "blk.0.attn_q.weight", 1, ne, 99, 0, 64);
    expect_fail(&b, INFERD_E_UNSUPPORTED,
                "gguf: tensor 'blk.0.attn_q.weight' has unknown type id 99");
    b.len = 0;
    /* 4..5 are ids GGUF retired (Q4_2, Q4_3). */
    one_tensor_file(&b, "t", 1, ne, 4, 0, 64);
    expect_fail(&b, INFERD_E_UNSUPPORTED, "unknown type id 4");
    free(b.p);
}

static void test_gguf_rejects_absurd_counts(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 3, 0, P62);
    b_zeros(&b, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: n_kv 4611686018427387904 at offset 16 is absurd");
    b.len = 0;
    b_header(&b, 3, P62, 0);
    b_zeros(&b, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: n_tensors 4611686018427387904 at offset 8 is absurd");
    b.len = 0;
    b_header(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_fail(&b, INFERD_E_FORMAT, "is absurd");

    /* n_tensors plausible for the header but not after the kvs. */
    b.len = 0;
    b_header(&b, 3, 2, 1);
    b_str(&b, "a-long-enough-key-to-use-up-the-bytes");
    b_u32(&b, INFERD_GGUF_U8);
    b_u8(&b, 1);
    b_zeros(&b, 40);
    expect_fail(&b, INFERD_E_FORMAT, "n_tensors 2 is absurd");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_u64(&b, P62);
    b_bytes(&b, "key", 3);
    b_zeros(&b, 16);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: key 0 name at offset 24 has length 4611686018427387904, past the end");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "s");
    b_u32(&b, INFERD_GGUF_STRING);
    b_u64(&b, UINT64_MAX);
    expect_fail(&b, INFERD_E_FORMAT, "key 0 value at offset 37 has length 18446744073709551615");

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_U64);
    b_u64(&b, P62);
    b_zeros(&b, 16);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: array count 4611686018427387904 of key 'a'");

    /* A string array count that 8-byte lengths could not fit in the file. */
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_STRING);
    b_u64(&b, P62);
    expect_fail(&b, INFERD_E_FORMAT, "array count 4611686018427387904 of key 'a'");

    /* An element string past the end. */
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_STRING);
    b_u64(&b, 1);
    b_u64(&b, 100);
    expect_fail(&b, INFERD_E_FORMAT, "key 0 array string at offset 49 has length 100");

    /* A nested array with an absurd inner count. */
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "n");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, INFERD_GGUF_U32);
    b_u64(&b, P62);
    expect_fail(&b, INFERD_E_FORMAT, "array count 4611686018427387904 of key 'n'");
    free(b.p);
}

static void test_gguf_rejects_overlapping_tensors(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {16};

    b_header(&b, 3, 2, 0);
    b_tensor(&b, "a", 1, ne, INFERD_DTYPE_F32, 0);
    b_tensor(&b, "b", 1, ne, INFERD_DTYPE_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 128);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensors 'a' and 'b' overlap");

    /* The same offset twice, listed in reverse order. */
    b.len = 0;
    b_header(&b, 3, 3, 0);
    b_tensor(&b, "c", 1, ne, INFERD_DTYPE_F32, 64);
    b_tensor(&b, "d", 1, ne, INFERD_DTYPE_F32, 128);
    b_tensor(&b, "e", 1, ne, INFERD_DTYPE_F32, 64);
    b_pad(&b, 32);
    b_zeros(&b, 256);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensors 'c' and 'e' overlap");

    /* Adjacent but not overlapping is fine. */
    b.len = 0;
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "b", 1, ne, INFERD_DTYPE_F32, 64);
    b_tensor(&b, "a", 1, ne, INFERD_DTYPE_F32, 0);
    b_pad(&b, 32);
    b_zeros(&b, 128);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_find_tensor(g, "a")->offset, 0);
    inferd_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_tensor_past_end(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {16};

    one_tensor_file(&b, "blk.0.attn_q.weight", 1, ne, INFERD_DTYPE_F32, 0, 63);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: tensor 'blk.0.attn_q.weight' data [96, 160) extends past end of file "
                "(size 159)");
    b.len = 0;
    one_tensor_file(&b, "t", 1, ne, INFERD_DTYPE_F32, UINT64_MAX - 31, 64);
    expect_fail(&b, INFERD_E_FORMAT, "extends past end of file");
    b.len = 0;
    /* The header alone is not padded up to the data section. */
    b_header(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, ne, INFERD_DTYPE_F32, 0);
    expect_fail(&b, INFERD_E_FORMAT, "extends past end of file");
    b.len = 0;
    /* K-quants: the size follows from the shape (two 256-element rows of
     * Q4_K are 2 x 144 bytes, of Q6_K 2 x 210), one byte short fails. */
    const uint64_t ne_k[] = {256, 2};
    one_tensor_file(&b, "blk.0.ffn_down.weight", 2, ne_k, INFERD_DTYPE_Q4_K, 0, 287);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: tensor 'blk.0.ffn_down.weight' data [96, 384) extends past end of file "
                "(size 383)");
    b.len = 0;
    one_tensor_file(&b, "output.weight", 2, ne_k, INFERD_DTYPE_Q6_K, 0, 419);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: tensor 'output.weight' data [96, 516) extends past end of file "
                "(size 515)");
    b.len = 0;
    one_tensor_file(&b, "output.weight", 2, ne_k, INFERD_DTYPE_Q6_K, 0, 420);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_tensor_at(g, 0)->size_bytes, 420);
    inferd_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_misaligned_offset(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {4};

    one_tensor_file(&b, "t", 1, ne, INFERD_DTYPE_F32, 4, 64);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: tensor 't' offset 4 is not a multiple of the alignment 32");
    free(b.p);
}

static void test_gguf_rejects_bad_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xff", "a\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"};
    buf b = {0};
    const uint64_t ne[] = {4};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b.len = 0;
        b_header(&b, 3, 0, 2);
        b_kv_u32(&b, "ok", 1);
        b_str(&b, bad[i]);
        b_u32(&b, INFERD_GGUF_U8);
        b_u8(&b, 0);
        expect_fail(&b, INFERD_E_FORMAT, "gguf: key 1 at offset 42 is not valid UTF-8");
    }
    b.len = 0;
    one_tensor_file(&b, "t\xfe", 1, ne, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 0 name at offset 24 is not valid UTF-8");

    /* Values may hold any bytes; keys may hold any valid UTF-8. */
    b.len = 0;
    b_header(&b, 3, 0, 2);
    b_str(&b, "v");
    b_u32(&b, INFERD_GGUF_STRING);
    b_str(&b, "\xff\xfe");
    b_str(&b, "\xe2\x96\x81\xf0\x9f\x98\x80");
    b_u32(&b, INFERD_GGUF_BOOL);
    b_u8(&b, 1);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_find_key(g, "\xe2\x96\x81\xf0\x9f\x98\x80"), 1);
    inferd_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_duplicates(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {8};

    b_header(&b, 3, 0, 3);
    b_kv_u32(&b, "x", 1);
    b_kv_u32(&b, "y", 2);
    b_kv_u32(&b, "x", 3);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: duplicate key 'x' (kv 0 and kv 2 at offset 58)");

    b.len = 0;
    b_header(&b, 3, 2, 0);
    b_tensor(&b, "w", 1, ne, INFERD_DTYPE_F32, 0);
    b_tensor(&b, "w", 1, ne, INFERD_DTYPE_F32, 32);
    b_pad(&b, 32);
    b_zeros(&b, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: duplicate tensor name 'w'");

    /* A key that is a prefix of another is not a duplicate. */
    b.len = 0;
    b_header(&b, 3, 0, 2);
    b_kv_u32(&b, "ab", 1);
    b_kv_u32(&b, "a", 2);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_find_key(g, "a"), 1);
    assert_int_equal(inferd_gguf_find_key(g, "ab"), 0);
    inferd_gguf_close(g);
    free(b.p);
}

static void test_gguf_rejects_bad_dims(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne7[] = {1, 1, 1, 1, 1, 1, 1}, zero[] = {4, 0},
                   big[] = {UINT64_C(1) << 32, UINT64_C(1) << 32};
    const uint64_t huge0[] = {UINT64_MAX}, bytes_overflow[] = {UINT64_C(1) << 62},
                   past_end[] = {UINT64_C(1) << 60};

    one_tensor_file(&b, "x", 0, ne7, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 'x' has n_dims 0 (min 1)");
    b.len = 0;
    one_tensor_file(&b, "x", 5, ne7, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 'x' has n_dims 5 (max 4)");
    b.len = 0;
    one_tensor_file(&b, "x", 7, ne7, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "has n_dims 7 (max 4)");
    b.len = 0;
    one_tensor_file(&b, "x", 2, zero, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 'x' dim 1 is 0");
    b.len = 0;
    one_tensor_file(&b, "x", 2, big, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 'x' element count overflows");
    b.len = 0;
    one_tensor_file(&b, "x", 1, huge0, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "element count overflows");
    b.len = 0;
    one_tensor_file(&b, "x", 1, bytes_overflow, INFERD_DTYPE_F64, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: tensor 'x' byte size overflows");
    b.len = 0;
    one_tensor_file(&b, "x", 1, past_end, INFERD_DTYPE_F32, 0, 64);
    expect_fail(&b, INFERD_E_FORMAT, "data [64, 4611686018427387968) extends past end of file");
    free(b.p);
}

static void test_gguf_rejects_partial_block(void **state)
{
    (void)state;
    buf b = {0};
    const uint64_t ne[] = {33, 2}, ne_k[] = {128};

    one_tensor_file(&b, "q", 2, ne, INFERD_DTYPE_Q4_0, 0, 128);
    expect_fail(&b, INFERD_E_FORMAT,
                "gguf: tensor 'q' row length 33 is not a multiple of the Q4_0 block size 32");
    b.len = 0;
    one_tensor_file(&b, "k", 1, ne_k, INFERD_DTYPE_Q6_K, 0, 256);
    expect_fail(&b, INFERD_E_FORMAT, "row length 128 is not a multiple of the Q6_K block size 256");
    free(b.p);
}

static void test_gguf_rejects_bad_alignment(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 3);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: alignment 3 is not a power of two");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 0);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: alignment 0 is not a power of two");
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, INFERD_GGUF_U64);
    b_u64(&b, 32);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: general.alignment has type u64 (expected u32)");

    /* A custom alignment is honoured for offsets and the data start. */
    const uint64_t ne[] = {4};
    b.len = 0;
    b_header(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 8);
    b_tensor(&b, "t", 1, ne, INFERD_DTYPE_F32, 8);
    b_pad(&b, 8);
    b_zeros(&b, 24);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_alignment(g), 8);
    assert_int_equal(inferd_gguf_data_offset(g), 96);
    inferd_gguf_close(g);
    free(b.p);
}

static void b_nested(buf *b, int depth)
{
    b_u32(b, depth > 1 ? INFERD_GGUF_ARRAY : INFERD_GGUF_U8);
    b_u64(b, 1);
    if (depth > 1)
        b_nested(b, depth - 1);
    else
        b_u8(b, 42);
}

static void test_gguf_nested_arrays(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 3, 0, 1);
    b_str(&b, "n");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_nested(&b, 4);
    inferd_gguf *g = expect_open(&b);
    assert_int_equal(inferd_gguf_kv_arr_type(g, 0), INFERD_GGUF_ARRAY);
    assert_int_equal(inferd_gguf_kv_arr_n(g, 0), 1);
    assert_null(inferd_gguf_kv_arr_data(g, 0));
    assert_null(inferd_gguf_kv_arr_str(g, 0, 0).ptr);
    assert_null(inferd_gguf_kv_str(g, 0).ptr);
    inferd_gguf_close(g);

    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "n");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_nested(&b, 5);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: key 'n' nests arrays deeper than 4 at offset 85");

    /* Nested arrays of strings are walked and checked too. */
    b.len = 0;
    b_header(&b, 3, 0, 1);
    b_str(&b, "s");
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u32(&b, INFERD_GGUF_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, INFERD_GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ok");
    b_u64(&b, 1000);
    expect_fail(&b, INFERD_E_FORMAT, "array string at offset 71 has length 1000");
    free(b.p);
}

static void test_gguf_truncated_messages(void **state)
{
    (void)state;
    buf b = {0};

    b_header(&b, 3, 0, 6);
    b_kv_u32(&b, "a", 1);
    b_kv_u32(&b, "b", 2);
    b_kv_u32(&b, "c", 3);
    b_kv_u32(&b, "d", 4);
    b_kv_u32(&b, "e", 5);
    b_str(&b, "f");
    b_u32(&b, INFERD_GGUF_U64);
    b_u32(&b, 0);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: truncated at offset 122 reading key 5 value");
    b.len = 0;
    b_bytes(&b, "GG", 2);
    expect_fail(&b, INFERD_E_FORMAT, "gguf: truncated at offset 0 reading header magic");
    free(b.p);
}

/* --- allocation failures ---------------------------------------------------------------- */

static void test_gguf_open_fault_injection(void **state)
{
    (void)state;
    const char *const files[] = {MODEL, VOCAB};

    for (size_t f = 0; f < 2; f++) {
        long n;
        for (n = 1; n < 1000; n++) {
            inferd_error err = {0};
            inferd_gguf *g = NULL;
            int rc;
            inferd_alloc_fail_after(n);
            rc = inferd_gguf_open(files[f], &g, &err);
            inferd_alloc_fail_after(0);
            if (rc == 0) {
                inferd_gguf_close(g);
                break;
            }
            if (rc != INFERD_E_NOMEM)
                fail_msg("%s: allocation %ld failed with %d '%s'", files[f], n, rc, err.msg);
            assert_null(g);
        }
        assert_true(n > 2 && n < 1000);
    }
}

/* Build and write a small file (tokenizer keys copied from @p src); the rc. */
static int write_small(const char *path, inferd_gguf *src)
{
    inferd_error err = {0};
    inferd_gguf_writer *w = NULL;
    const char *const strs[] = {"x", "y"};
    const uint64_t ne[] = {32};
    fill_state fs = {3, 0, 0};
    const uint8_t arr[] = {1, 2};
    int rc;

    rc = inferd_gguf_writer_create(&w, &err);
    if (rc < 0)
        return rc;
    if ((rc = inferd_gguf_writer_set_str(w, "general.architecture", "llama", &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "n", 1, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_arr(w, "arr", INFERD_GGUF_U8, arr, 2, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_arr_str(w, "strs", strs, 2, &err)) < 0 ||
        (rc = inferd_gguf_writer_copy_kv(w, src, "tokenizer.ggml.t", &err)) < 0 ||
        (rc = inferd_gguf_writer_add_tensor(w, "t", INFERD_DTYPE_Q8_0, 1, ne, NULL, fill_pattern,
                                            &fs, &err)) < 0 ||
        (rc = inferd_gguf_writer_write(w, path, &err)) < 0) {
        inferd_gguf_writer_destroy(w);
        return rc;
    }
    inferd_gguf_writer_destroy(w);
    return 0;
}

static void test_gguf_writer_fault_injection(void **state)
{
    (void)state;
    inferd_error err = {0};
    inferd_gguf *src = NULL, *g = NULL;
    char path[512];
    long n;

    assert_int_equal(inferd_gguf_open(VOCAB, &src, &err), 0);
    tmp_path(path, sizeof(path), "fault.gguf");
    for (n = 1; n < 1000; n++) {
        int rc;
        inferd_alloc_fail_after(n);
        rc = write_small(path, src);
        inferd_alloc_fail_after(0);
        if (rc == 0)
            break;
        assert_int_equal(rc, INFERD_E_NOMEM);
        assert_int_equal(access(path, F_OK), -1);
    }
    assert_true(n > 5 && n < 1000);
    assert_int_equal(inferd_gguf_open(path, &g, &err), 0);
    assert_int_equal(inferd_gguf_n_tensors(g), 1);
    int64_t k = inferd_gguf_find_key(g, "tokenizer.ggml.tokens");
    assert_true(k >= 0);
    assert_int_equal(inferd_gguf_kv_arr_n(g, (uint64_t)k), 32000);
    inferd_gguf_close(g);
    inferd_gguf_close(src);
}

/* --- setup ------------------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    char path[512];

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        tmp_path(path, sizeof(path), e->d_name);
        unlink(path);
    }
    closedir(d);
    return rmdir(tmp_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_reads_stories260k),
        cmocka_unit_test(test_gguf_reads_all_fixtures),
        cmocka_unit_test(test_gguf_reads_vocab_only),
        cmocka_unit_test(test_gguf_open_errors),
        cmocka_unit_test(test_gguf_writer_round_trip),
        cmocka_unit_test(test_gguf_writer_alignment),
        cmocka_unit_test(test_gguf_writer_failures),
        cmocka_unit_test(test_gguf_writer_copy_kv),
        cmocka_unit_test(test_gguf_rejects_every_truncation),
        cmocka_unit_test(test_gguf_rejects_bad_magic),
        cmocka_unit_test(test_gguf_rejects_versions),
        cmocka_unit_test(test_gguf_rejects_unknown_kv_type),
        cmocka_unit_test(test_gguf_rejects_unknown_tensor_type),
        cmocka_unit_test(test_gguf_rejects_absurd_counts),
        cmocka_unit_test(test_gguf_rejects_overlapping_tensors),
        cmocka_unit_test(test_gguf_rejects_tensor_past_end),
        cmocka_unit_test(test_gguf_rejects_misaligned_offset),
        cmocka_unit_test(test_gguf_rejects_bad_utf8),
        cmocka_unit_test(test_gguf_rejects_duplicates),
        cmocka_unit_test(test_gguf_rejects_bad_dims),
        cmocka_unit_test(test_gguf_rejects_partial_block),
        cmocka_unit_test(test_gguf_rejects_bad_alignment),
        cmocka_unit_test(test_gguf_nested_arrays),
        cmocka_unit_test(test_gguf_truncated_messages),
        cmocka_unit_test(test_gguf_open_fault_injection),
        cmocka_unit_test(test_gguf_writer_fault_injection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
