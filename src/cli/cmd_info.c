/* `inferd info -m FILE [--json]`: show a GGUF file's header, metadata (long
 * arrays summarized), tensor table and byte totals per tensor type, as text
 * or as one JSON object. The file is only read, through the GGUF module. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/dtype.h"
#include "inferd/gguf.h"

#define CMD "info"
#define TEXT_ARR_SHOWN 8 /* array elements printed in text mode */
#define JSON_ARR_MAX 16  /* longer arrays are summarized in JSON */
#define TEXT_STR_MAX 96  /* bytes of a string value printed in text mode */

/* --- reading values ---------------------------------------------------------- */

static uint64_t load_le(const uint8_t *p, uint32_t size)
{
    uint64_t v = 0;
    for (uint32_t i = 0; i < size; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t num_size(inferd_gguf_type t)
{
    switch (t) {
    case INFERD_GGUF_U8:
    case INFERD_GGUF_I8:
    case INFERD_GGUF_BOOL: return 1;
    case INFERD_GGUF_U16:
    case INFERD_GGUF_I16: return 2;
    case INFERD_GGUF_U32:
    case INFERD_GGUF_I32:
    case INFERD_GGUF_F32: return 4;
    case INFERD_GGUF_U64:
    case INFERD_GGUF_I64:
    case INFERD_GGUF_F64: return 8;
    default: return 0;
    }
}

/* A decoded number: which member is meaningful follows from the type. */
typedef struct num {
    enum { NUM_U, NUM_I, NUM_F, NUM_BOOL } kind;
    uint64_t u;
    int64_t i;
    double f;
} num;

static num decode(inferd_gguf_type t, const uint8_t *p)
{
    num n = {NUM_U, 0, 0, 0};
    uint64_t raw = load_le(p, num_size(t));

    switch (t) {
    case INFERD_GGUF_I8: n.kind = NUM_I, n.i = (int8_t)raw; break;
    case INFERD_GGUF_I16: n.kind = NUM_I, n.i = (int16_t)raw; break;
    case INFERD_GGUF_I32: n.kind = NUM_I, n.i = (int32_t)raw; break;
    case INFERD_GGUF_I64: n.kind = NUM_I, n.i = (int64_t)raw; break;
    case INFERD_GGUF_BOOL: n.kind = NUM_BOOL, n.u = raw != 0; break;
    case INFERD_GGUF_F32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, sizeof(f));
        n.kind = NUM_F, n.f = f;
        break;
    }
    case INFERD_GGUF_F64:
        n.kind = NUM_F;
        memcpy(&n.f, &raw, sizeof(n.f));
        break;
    default: n.u = raw; break;
    }
    return n;
}

/* Valid UTF-8 length of the sequence starting at p[0] (1..4), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    uint32_t cp, min;
    size_t n;

    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0)
        n = 2, min = 0x80, cp = p[0] & 0x1f;
    else if ((p[0] & 0xf0) == 0xe0)
        n = 3, min = 0x800, cp = p[0] & 0x0f;
    else if ((p[0] & 0xf8) == 0xf0)
        n = 4, min = 0x10000, cp = p[0] & 0x07;
    else
        return 0;
    if (left < n)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* --- text output ------------------------------------------------------------------ */

static void print_num(num n)
{
    switch (n.kind) {
    case NUM_U: printf("%" PRIu64, n.u); break;
    case NUM_I: printf("%" PRId64, n.i); break;
    case NUM_F: printf("%.9g", n.f); break;
    case NUM_BOOL: printf("%s", n.u ? "true" : "false"); break;
    }
}

/* A quoted string, cut after about @p max bytes; control bytes and bytes
 * that are not valid UTF-8 are escaped. */
static void print_str(inferd_gguf_str s, uint64_t max)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    uint64_t n = s.len < max ? s.len : max, i = 0;

    putchar('"');
    while (i < n) {
        unsigned char c = p[i];
        size_t k = c >= 0x80 ? utf8_seq(p + i, (size_t)(s.len - i)) : 1;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            printf("\\n");
        else if (c < 0x20 || c == 0x7f || k == 0)
            printf("\\x%02x", c);
        else
            fwrite(p + i, 1, k, stdout);
        i += k ? k : 1;
    }
    putchar('"');
    if (i < s.len)
        printf("... (%" PRIu64 " bytes)", s.len);
}

static void print_value(const inferd_gguf *g, uint64_t i)
{
    inferd_gguf_type t = inferd_gguf_kv_type(g, i);

    if (t == INFERD_GGUF_STRING) {
        print_str(inferd_gguf_kv_str(g, i), TEXT_STR_MAX);
    } else if (t == INFERD_GGUF_ARRAY) {
        inferd_gguf_type et = inferd_gguf_kv_arr_type(g, i);
        uint64_t n = inferd_gguf_kv_arr_n(g, i), shown = n < TEXT_ARR_SHOWN ? n : TEXT_ARR_SHOWN;
        const uint8_t *data = inferd_gguf_kv_arr_data(g, i);

        printf("[%s x %" PRIu64 "]", inferd_gguf_type_name(et), n);
        if (et == INFERD_GGUF_ARRAY)
            return;
        for (uint64_t j = 0; j < shown; j++) {
            printf(j ? ", " : " ");
            if (et == INFERD_GGUF_STRING)
                print_str(inferd_gguf_kv_arr_str(g, i, j), 32);
            else
                print_num(decode(et, data + j * num_size(et)));
        }
        if (shown < n)
            printf(", ...");
    } else {
        print_num(decode(t, inferd_gguf_kv_data(g, i)));
    }
}

static void format_dims(const inferd_gguf_tensor *t, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (uint32_t d = 0; d < t->n_dims && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? " x %" PRIu64 : "%" PRIu64, t->ne[d]);
}

typedef struct totals {
    uint64_t n[INFERD_DTYPE_COUNT];
    uint64_t bytes[INFERD_DTYPE_COUNT];
    uint64_t n_all, bytes_all;
} totals;

static void sum_tensors(const inferd_gguf *g, totals *tot)
{
    memset(tot, 0, sizeof(*tot));
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
        /* The reader only accepts known types, all below INFERD_DTYPE_COUNT. */
        tot->n[t->type]++;
        tot->bytes[t->type] += t->size_bytes;
        tot->n_all++;
        tot->bytes_all += t->size_bytes;
    }
}

static void print_text(const char *path, const inferd_gguf *g)
{
    uint64_t n_kv = inferd_gguf_n_kv(g), n_t = inferd_gguf_n_tensors(g);
    totals tot;
    char dims[96];

    printf("file:        %s\n", path);
    printf("version:     %" PRIu32 "\n", inferd_gguf_version(g));
    printf("alignment:   %" PRIu32 "\n", inferd_gguf_alignment(g));
    printf("data offset: %" PRIu64 "\n", inferd_gguf_data_offset(g));
    printf("file size:   %" PRIu64 " bytes\n", inferd_gguf_file_size(g));

    printf("\nmetadata (%" PRIu64 " keys):\n", n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        inferd_gguf_str k = inferd_gguf_kv_key(g, i);
        printf("  %-44.*s %-6s ", (int)(k.len > 200 ? 200 : k.len), k.ptr,
               inferd_gguf_type_name(inferd_gguf_kv_type(g, i)));
        print_value(g, i);
        putchar('\n');
    }

    printf("\ntensors (%" PRIu64 "):\n", n_t);
    if (n_t)
        printf("  %-40s %-5s %-24s %12s %12s\n", "name", "type", "dims", "offset", "bytes");
    for (uint64_t i = 0; i < n_t; i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
        format_dims(t, dims, sizeof(dims));
        printf("  %-40.*s %-5s %-24s %12" PRIu64 " %12" PRIu64 "\n",
               (int)(t->name.len > 200 ? 200 : t->name.len), t->name.ptr,
               inferd_dtype_name(t->type), dims, t->offset, t->size_bytes);
    }

    sum_tensors(g, &tot);
    printf("\ntotals:\n");
    for (uint32_t ty = 0; ty < INFERD_DTYPE_COUNT; ty++)
        if (tot.n[ty])
            printf("  %-5s %6" PRIu64 " tensors %14" PRIu64 " bytes\n", inferd_dtype_name(ty),
                   tot.n[ty], tot.bytes[ty]);
    printf("  %-5s %6" PRIu64 " tensors %14" PRIu64 " bytes\n", "all", tot.n_all, tot.bytes_all);
}

/* --- JSON output ------------------------------------------------------------------- */

/* A JSON string of @p s; bytes that are not valid UTF-8 (token pieces may
 * be) become U+FFFD so the output stays valid JSON. NULL on no memory. */
static json_t *json_str(inferd_gguf_str s)
{
    const unsigned char *p = (const unsigned char *)s.ptr;
    json_t *j = json_stringn(s.ptr, (size_t)s.len);
    unsigned char *fixed;
    size_t o = 0;

    if (j || s.len > SIZE_MAX / 3)
        return j;
    fixed = inferd_malloc((size_t)s.len * 3);
    if (!fixed)
        return NULL;
    for (size_t i = 0; i < s.len;) {
        size_t n = utf8_seq(p + i, (size_t)s.len - i);
        if (n) {
            memcpy(fixed + o, p + i, n);
            o += n, i += n;
        } else {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3, i++;
        }
    }
    j = json_stringn((const char *)fixed, o);
    inferd_free(fixed);
    return j;
}

static json_t *json_num(num n)
{
    switch (n.kind) {
    case NUM_U: return n.u <= INT64_MAX ? json_integer((json_int_t)n.u) : json_real((double)n.u);
    case NUM_I: return json_integer((json_int_t)n.i);
    case NUM_F:
        /* JSON has no NaN or infinity. */
        if (isnan(n.f))
            return json_string("nan");
        if (isinf(n.f))
            return json_string(n.f > 0 ? "inf" : "-inf");
        return json_real(n.f);
    case NUM_BOOL: return json_boolean(n.u);
    }
    return json_null();
}

/* Append to @p a, taking the reference of @p v; -1 if either failed. */
static int push(json_t *a, json_t *v) { return v ? json_array_append_new(a, v) : -1; }

static json_t *json_value(const inferd_gguf *g, uint64_t i)
{
    inferd_gguf_type t = inferd_gguf_kv_type(g, i), et;
    const uint8_t *data;
    uint64_t n;
    json_t *a;

    if (t == INFERD_GGUF_STRING)
        return json_str(inferd_gguf_kv_str(g, i));
    if (t != INFERD_GGUF_ARRAY)
        return json_num(decode(t, inferd_gguf_kv_data(g, i)));
    et = inferd_gguf_kv_arr_type(g, i);
    n = inferd_gguf_kv_arr_n(g, i);
    if (n > JSON_ARR_MAX || et == INFERD_GGUF_ARRAY)
        return json_pack("{s:s, s:s, s:I}", "type", "array", "elem_type", inferd_gguf_type_name(et),
                         "n", (json_int_t)n);
    a = json_array();
    data = inferd_gguf_kv_arr_data(g, i);
    for (uint64_t j = 0; a && j < n; j++) {
        json_t *v = et == INFERD_GGUF_STRING ? json_str(inferd_gguf_kv_arr_str(g, i, j))
                                             : json_num(decode(et, data + j * num_size(et)));
        if (push(a, v) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *json_tensor(const inferd_gguf_tensor *t)
{
    json_t *ne = json_array();

    for (uint32_t d = 0; ne && d < t->n_dims; d++) {
        if (push(ne, json_integer((json_int_t)t->ne[d])) < 0) {
            json_decref(ne);
            return NULL;
        }
    }
    if (!ne)
        return NULL;
    return json_pack("{s:o, s:s, s:o, s:I, s:I}", "name", json_str(t->name), "type",
                     inferd_dtype_name(t->type), "ne", ne, "offset", (json_int_t)t->offset,
                     "size_bytes", (json_int_t)t->size_bytes);
}

static json_t *json_totals(const inferd_gguf *g)
{
    json_t *by_type = json_object();
    totals tot;

    if (!by_type)
        return NULL;
    sum_tensors(g, &tot);
    for (uint32_t ty = 0; ty < INFERD_DTYPE_COUNT; ty++) {
        if (!tot.n[ty])
            continue;
        if (json_object_set_new(by_type, inferd_dtype_name(ty),
                                json_pack("{s:I, s:I}", "n", (json_int_t)tot.n[ty], "size_bytes",
                                          (json_int_t)tot.bytes[ty])) < 0) {
            json_decref(by_type);
            return NULL;
        }
    }
    return json_pack("{s:I, s:I, s:o}", "n_tensors", (json_int_t)tot.n_all, "size_bytes",
                     (json_int_t)tot.bytes_all, "by_type", by_type);
}

static json_t *build_json(const inferd_gguf *g)
{
    json_t *meta = json_object(), *tensors = json_array();

    if (!meta || !tensors)
        goto fail;
    for (uint64_t i = 0; i < inferd_gguf_n_kv(g); i++) {
        inferd_gguf_str k = inferd_gguf_kv_key(g, i);
        json_t *v = json_value(g, i);
        if (!v || json_object_setn_new(meta, k.ptr, (size_t)k.len, v) < 0)
            goto fail;
    }
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++)
        if (push(tensors, json_tensor(inferd_gguf_tensor_at(g, i))) < 0)
            goto fail;
    /* json_pack's "o" takes the references, also when it fails. */
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "version", (json_int_t)inferd_gguf_version(g),
        "alignment", (json_int_t)inferd_gguf_alignment(g), "data_offset",
        (json_int_t)inferd_gguf_data_offset(g), "file_size", (json_int_t)inferd_gguf_file_size(g),
        "metadata", meta, "tensors", tensors, "totals", json_totals(g));

fail:
    json_decref(meta);
    json_decref(tensors);
    return NULL;
}

int inferd__cmd_info(int argc, char **argv)
{
    const char *path = NULL, *pos[1];
    bool json = false, want_help = false;
    int n_pos = 0, status = CLI_EXIT_FAIL;
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR, &path, 0, 0, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };

    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf("usage: inferd info -m FILE [--json]\n"
               "Show a GGUF file's version, metadata, tensors and size totals.\n");
        return 0;
    }
    if (!path) {
        inferd__cli_error(CMD, "-m FILE is required (see --help)");
        return CLI_EXIT_USAGE;
    }
    if (inferd_gguf_open(path, &g, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        return CLI_EXIT_FAIL;
    }
    if (json) {
        json_t *o = build_json(g);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (!s) {
            inferd__cli_error(CMD, "no memory to format '%s' as JSON", path);
            json_decref(o);
            goto done;
        }
        puts(s);
        free(s);
        json_decref(o);
    } else {
        print_text(path, g);
    }
    if (fflush(stdout) != 0) {
        inferd__cli_error(CMD, "cannot write the output");
        goto done;
    }
    status = 0;

done:
    inferd_gguf_close(g);
    return status;
}
