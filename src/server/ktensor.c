/* KServe v2 tensors in an inference request and its response, in the
 * three ways a client may send them: JSON "data", Triton's binary tensor
 * data (bytes after the JSON), and system shared memory (a region view,
 * read in place); and the built-in identity model, which answers each
 * input INPUTn as output OUTPUTn (as Triton's identity backend), so that
 * transports can be tested and measured without model compute.
 *
 * Shared memory: an input in a region is a view of it (zero copy). An
 * output in a region is written there; an output that is exactly its
 * input's bytes (the same object, offset and size) is left in place, any
 * other overlap of an output with an input is refused. Every view is
 * checked after use: a client that truncated its object gets an error,
 * never a crash. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/fp16.h"
#include "inferd/region.h"
#include "inferd/tensor.h"

#define KT_MAX 16                       /* inputs or outputs of one request */
#define KT_NAME_MAX 64                  /* bytes of a tensor name, with its NUL */
#define KT_JSON_MAX ((uint64_t)1 << 26) /* elements written as JSON data */

typedef struct kt_shm {
    bool on;
    char region[INFERD_REGION_NAME_MAX];
    uint64_t offset, size;
} kt_shm;

typedef struct kt_in {
    char name[KT_NAME_MAX];
    inferd_tensor t;
    kt_shm shm;
} kt_in;

typedef struct kt_out {
    char name[KT_NAME_MAX];
    bool binary;
    kt_shm shm;
} kt_out;

typedef struct kt_req {
    kt_in in[KT_MAX];
    size_t n_in;
    kt_out out[KT_MAX];
    size_t n_out; /* 0: every output, as JSON (or binary_data_output) */
    bool binary_default;
} kt_req;

static void kt_free(kt_req *r)
{
    for (size_t i = 0; i < r->n_in; i++)
        inferd_tensor_fini(&r->in[i].t);
    r->n_in = 0;
}

bool inferd__server_is_identity(const inferd_server *s, const char *m)
{
    for (size_t i = 0; m && i < s->n_identity; i++)
        if (strcmp(s->identity[i], m) == 0)
            return true;
    return false;
}

/* ---- parameters ---- */

/* Is shared memory served to @p c's connection? */
static int shm_served(const http_conn *c, const char *what, inferd_error *err)
{
    if (c->srv->regions && (c->l->is_unix || c->srv->shm_tcp))
        return 0;
    return inferd_fail_param(err, INFERD_E_UNSUPPORTED, "shared_memory_region",
                             "%s: system shared memory is not served on this connection "
                             "(--shm; the Unix socket, or a loopback host)",
                             what);
}

/* The shared-memory parameters of @p params (Triton: region and byte size
 * both, or neither; offset optional). @p what names the tensor. */
static int read_shm(json_t *params, const char *what, kt_shm *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    json_t *r = json_object_get(params, "shared_memory_region");
    json_t *n = json_object_get(params, "shared_memory_byte_size");
    json_t *o = json_object_get(params, "shared_memory_offset");
    if (!r && !n && !o)
        return 0;
    if (!r || !n)
        return inferd_fail_param(err, INFERD_E_INVALID, "shared_memory_region",
                                 "%s: shared_memory_region and shared_memory_byte_size go "
                                 "together",
                                 what);
    if (!json_is_string(r) || strlen(json_string_value(r)) >= INFERD_REGION_NAME_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "shared_memory_region",
                                 "%s: shared_memory_region must be a region's name", what);
    if (!json_is_integer(n) || json_integer_value(n) < 0 ||
        (o && (!json_is_integer(o) || json_integer_value(o) < 0)))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "shared_memory_byte_size",
                                 "%s: shared_memory_byte_size and shared_memory_offset are "
                                 "non-negative integers",
                                 what);
    out->on = true;
    snprintf(out->region, sizeof(out->region), "%s", json_string_value(r));
    out->size = (uint64_t)json_integer_value(n);
    out->offset = o ? (uint64_t)json_integer_value(o) : 0;
    return 0;
}

/* ---- JSON data ---- */

/* Append the leaves of (nested) array @p v to @p flat. */
static int flatten(json_t *v, json_t *flat, int depth, const char *what, inferd_error *err)
{
    if (!json_is_array(v))
        return json_array_append(flat, v);
    if (depth > INFERD_TENSOR_DIMS_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "data", "%s: data nested too deep", what);
    size_t i;
    json_t *x;
    json_array_foreach (v, i, x) {
        if (flatten(x, flat, depth + 1, what, err) < 0)
            return -1;
    }
    return 0;
}

/* One JSON value @p v into element @p i of @p t. */
static int put_value(inferd_tensor *t, uint64_t i, json_t *v, const char *what, inferd_error *err)
{
    char *p = (char *)inferd_tensor_data(t) + i * inferd_elem_size(t->elem);
    const inferd_elem e = t->elem;
    if (e == INFERD_ELEM_BOOL) {
        if (!json_is_boolean(v))
            goto type;
        *(uint8_t *)p = json_is_true(v);
        return 0;
    }
    if (e == INFERD_ELEM_F16 || e == INFERD_ELEM_BF16 || e == INFERD_ELEM_F32 ||
        e == INFERD_ELEM_F64) {
        if (!json_is_number(v))
            goto type;
        double d = json_number_value(v);
        if (e == INFERD_ELEM_F64)
            memcpy(p, &d, 8);
        else if (e == INFERD_ELEM_F32) {
            float f = (float)d;
            memcpy(p, &f, 4);
        } else if (e == INFERD_ELEM_F16) {
            inferd_f16 h = inferd_f32_to_f16((float)d);
            memcpy(p, &h, 2);
        } else {
            inferd_bf16 h = inferd_f32_to_bf16((float)d);
            memcpy(p, &h, 2);
        }
        return 0;
    }
    if (!json_is_integer(v))
        goto type;
    const json_int_t x = json_integer_value(v);
    static const struct {
        json_int_t lo, hi;
    } range[] = {
        [INFERD_ELEM_U8] = {0, 255},
        [INFERD_ELEM_U16] = {0, 65535},
        [INFERD_ELEM_U32] = {0, 4294967295ll},
        [INFERD_ELEM_U64] = {0, INT64_MAX},
        [INFERD_ELEM_I8] = {-128, 127},
        [INFERD_ELEM_I16] = {-32768, 32767},
        [INFERD_ELEM_I32] = {INT32_MIN, INT32_MAX},
        [INFERD_ELEM_I64] = {INT64_MIN, INT64_MAX},
    };
    if (x < range[e].lo || x > range[e].hi)
        return inferd_fail_param(err, INFERD_E_RANGE, "data",
                                 "%s: element %llu, %lld, is out of range for %s", what,
                                 (unsigned long long)i, (long long)x, inferd_elem_name(e));
    switch (inferd_elem_size(e)) {
    case 1: *(uint8_t *)p = (uint8_t)x; break;
    case 2: *(uint16_t *)p = (uint16_t)x; break;
    case 4: *(uint32_t *)p = (uint32_t)x; break;
    default: *(uint64_t *)p = (uint64_t)x; break;
    }
    return 0;
type:
    return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "data",
                             "%s: element %llu is not a %s value", what, (unsigned long long)i,
                             inferd_elem_name(e));
}

/* BYTES elements as KServe's binary form (4-byte little-endian length, then
 * the bytes): the bytes of @p flat's strings. */
static int bytes_from_json(json_t *flat, inferd_tensor *out, const char *what, inferd_error *err)
{
    size_t total = 0, i;
    json_t *x;
    json_array_foreach (flat, i, x) {
        if (!json_is_string(x))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "data",
                                     "%s: element %zu of BYTES data is not a string", what, i);
        total += 4 + json_string_length(x);
    }
    inferd_storage *s;
    int rc = inferd_storage_heap(total, &s, err);
    if (rc < 0)
        return rc;
    char *p = inferd_storage_data(s);
    json_array_foreach (flat, i, x) {
        uint32_t n = (uint32_t)json_string_length(x);
        memcpy(p, &n, 4); /* little-endian hosts only (x86-64, arm64) */
        memcpy(p + 4, json_string_value(x), n);
        p += 4 + n;
    }
    /* A BYTES tensor is its bytes: shape says the elements, the storage
     * their encoding (one byte "element" each). */
    int64_t n1 = (int64_t)total;
    rc = inferd_tensor_init(out, INFERD_ELEM_BYTES, 1, &n1, NULL, 0, s, err);
    inferd_storage_unref(s);
    return rc;
}

/* The number of BYTES elements in @p n bytes of KServe's binary form, or -1
 * when they do not parse. */
static int64_t bytes_count(const char *p, uint64_t n)
{
    int64_t k = 0;
    uint64_t at = 0;
    while (at < n) {
        uint32_t len;
        if (n - at < 4)
            return -1;
        memcpy(&len, p + at, 4);
        if (len > n - at - 4)
            return -1;
        at += 4 + (uint64_t)len;
        k++;
    }
    return k;
}

/* ---- the request ---- */

/* Input @p j (index @p k): its tensor from shared memory, binary data
 * (bytes at *bin_at of c->bin) or JSON data. */
static int read_input(http_conn *c, json_t *j, size_t k, size_t *bin_at, kt_in *in,
                      inferd_error *err)
{
    json_t *name = json_object_get(j, "name"), *dt = json_object_get(j, "datatype");
    json_t *shape = json_object_get(j, "shape"), *params = json_object_get(j, "parameters");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) >= KT_NAME_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "input %zu: a name of 1 to %d bytes is required", k,
                                 KT_NAME_MAX - 1);
    const char *nm = json_string_value(name);
    snprintf(in->name, sizeof(in->name), "%s", nm);
    int e = json_is_string(dt) ? inferd_elem_parse(json_string_value(dt)) : -1;
    if (e < 0)
        return inferd_fail_param(err, INFERD_E_INVALID, "datatype",
                                 "input '%s': datatype must be one of BOOL, UINT8..UINT64, "
                                 "INT8..INT64, FP16, BF16, FP32, FP64, BYTES",
                                 nm);
    if (!json_is_array(shape) || json_array_size(shape) > INFERD_TENSOR_DIMS_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "shape",
                                 "input '%s': shape must be an array of at most %d sizes", nm,
                                 INFERD_TENSOR_DIMS_MAX);
    int64_t dims[INFERD_TENSOR_DIMS_MAX];
    const uint32_t nd = (uint32_t)json_array_size(shape);
    __int128 numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        json_t *v = json_array_get(shape, d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return inferd_fail_param(err, INFERD_E_INVALID, "shape",
                                     "input '%s': shape[%u] is not a size", nm, d);
        dims[d] = json_integer_value(v);
        numel *= dims[d];
        if (numel > ((__int128)1 << 50))
            return inferd_fail_param(err, INFERD_E_RANGE, "shape",
                                     "input '%s': the shape has too many elements", nm);
    }
    if (params && !json_is_object(params))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "parameters",
                                 "input '%s': parameters must be an object", nm);
    int rc = read_shm(params, nm, &in->shm, err);
    if (rc == 0 && in->shm.on)
        rc = shm_served(c, nm, err);
    if (rc < 0)
        return rc;
    json_t *bsz = json_object_get(params, "binary_data_size");
    json_t *data = json_object_get(j, "data");
    const int ways = (in->shm.on ? 1 : 0) + (bsz ? 1 : 0) + (data ? 1 : 0);
    if (ways != 1)
        return inferd_fail_param(err, INFERD_E_INVALID, "data",
                                 "input '%s': give its data one way: data, binary_data_size or "
                                 "shared memory (it has %d)",
                                 nm, ways);
    const uint64_t esz = inferd_elem_size((inferd_elem)e);
    const bool is_bytes = e == INFERD_ELEM_BYTES;
    inferd_storage *s = NULL;
    uint64_t nbytes = 0;
    if (in->shm.on || bsz) {
        if (in->shm.on) {
            nbytes = in->shm.size;
            if ((rc = inferd_regions_view(c->srv->regions, in->shm.region, in->shm.offset, nbytes,
                                          false, &s, err)) < 0)
                return rc;
        } else {
            if (!json_is_integer(bsz) || json_integer_value(bsz) < 0)
                return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "binary_data_size",
                                         "input '%s': binary_data_size must be a size", nm);
            nbytes = (uint64_t)json_integer_value(bsz);
            if (!c->bin || nbytes > c->bin_len - *bin_at)
                return inferd_fail_param(
                    err, INFERD_E_INVALID, "binary_data_size",
                    "input '%s': binary_data_size %llu is beyond the %zu bytes of binary data "
                    "after the JSON (Inference-Header-Content-Length)",
                    nm, (unsigned long long)nbytes, c->bin ? c->bin_len - *bin_at : 0);
            /* The body lives until the request is answered: borrowed. */
            if ((rc = inferd_storage_wrap(INFERD_STORAGE_BORROWED, (char *)c->bin + *bin_at,
                                          (size_t)nbytes, NULL, NULL, &s, err)) < 0)
                return rc;
            *bin_at += (size_t)nbytes;
        }
        const int64_t want = is_bytes ? bytes_count(inferd_storage_data(s), nbytes)
                                      : (int64_t)((uint64_t)numel * esz);
        if (is_bytes ? want != (int64_t)numel : (uint64_t)want != nbytes) {
            inferd_storage_unref(s);
            return inferd_fail_param(err, INFERD_E_INVALID, "shape",
                                     is_bytes ? "input '%s': its bytes hold %lld BYTES elements, "
                                                "the shape says %lld"
                                              : "input '%s': %lld bytes for the shape, %llu given",
                                     nm, (long long)want,
                                     is_bytes ? (long long)numel : (long long)nbytes);
        }
        int64_t flat = is_bytes ? (int64_t)nbytes : 0;
        rc = is_bytes ? inferd_tensor_init(&in->t, INFERD_ELEM_BYTES, 1, &flat, NULL, 0, s, err)
                      : inferd_tensor_init(&in->t, (inferd_elem)e, nd, dims, NULL, 0, s, err);
        inferd_storage_unref(s);
        if (rc == 0 && is_bytes) { /* the shape the client gave, on the bytes */
            in->t.ndim = nd;
            memcpy(in->t.shape, dims, sizeof(int64_t) * nd);
        }
        return rc;
    }
    /* JSON data */
    json_t *flat = json_array();
    if (!flat || flatten(data, flat, 0, nm, err) < 0) {
        json_decref(flat);
        return flat ? -1 : inferd_fail(err, INFERD_E_NOMEM, "no memory for input '%s'", nm);
    }
    if ((__int128)json_array_size(flat) != numel) {
        rc = inferd_fail_param(err, INFERD_E_INVALID, "shape",
                               "input '%s': %zu data elements, the shape says %lld", nm,
                               json_array_size(flat), (long long)numel);
        json_decref(flat);
        return rc;
    }
    if (is_bytes) {
        rc = bytes_from_json(flat, &in->t, nm, err);
        if (rc == 0) {
            in->t.ndim = nd;
            memcpy(in->t.shape, dims, sizeof(int64_t) * nd);
        }
        json_decref(flat);
        return rc;
    }
    rc = inferd_tensor_alloc(&in->t, (inferd_elem)e, nd, dims, err);
    for (uint64_t i = 0; rc == 0 && i < (uint64_t)numel; i++)
        rc = put_value(&in->t, i, json_array_get(flat, i), nm, err);
    json_decref(flat);
    return rc;
}

static int read_request(http_conn *c, json_t *body, kt_req *r, inferd_error *err)
{
    memset(r, 0, sizeof(*r));
    json_t *inputs = json_object_get(body, "inputs"), *outputs = json_object_get(body, "outputs");
    json_t *params = json_object_get(body, "parameters");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0 || json_array_size(inputs) > KT_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "inputs must be an array of 1 to %d tensors", KT_MAX);
    if (outputs && (!json_is_array(outputs) || json_array_size(outputs) > KT_MAX))
        return inferd_fail_param(err, INFERD_E_INVALID, "outputs",
                                 "outputs must be an array of at most %d tensors", KT_MAX);
    json_t *bdo = json_object_get(params, "binary_data_output");
    r->binary_default = json_is_true(bdo);
    size_t bin_at = 0, i;
    json_t *j;
    json_array_foreach (inputs, i, j) {
        if (!json_is_object(j))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "inputs",
                                     "input %zu is not an object", i);
        int rc = read_input(c, j, i, &bin_at, &r->in[r->n_in], err);
        if (rc < 0) { /* a tensor made before the error goes too */
            inferd_tensor_fini(&r->in[r->n_in].t);
            return rc;
        }
        r->n_in++;
        for (size_t k = 0; k + 1 < r->n_in; k++)
            if (strcmp(r->in[k].name, r->in[r->n_in - 1].name) == 0)
                return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                         "input '%s' is given twice", r->in[k].name);
    }
    if (c->bin && bin_at != c->bin_len)
        return inferd_fail_param(err, INFERD_E_INVALID, "binary_data_size",
                                 "%zu bytes of binary data follow the JSON; the inputs' "
                                 "binary_data_size take %zu",
                                 c->bin_len, bin_at);
    json_array_foreach (outputs, i, j) {
        json_t *name = json_object_get(j, "name"), *p = json_object_get(j, "parameters");
        if (!json_is_string(name) || json_string_length(name) == 0 ||
            json_string_length(name) >= KT_NAME_MAX)
            return inferd_fail_param(err, INFERD_E_INVALID, "outputs",
                                     "output %zu: a name of 1 to %d bytes is required", i,
                                     KT_NAME_MAX - 1);
        kt_out *o = &r->out[r->n_out++];
        snprintf(o->name, sizeof(o->name), "%s", json_string_value(name));
        for (size_t k = 0; k + 1 < r->n_out; k++)
            if (strcmp(r->out[k].name, o->name) == 0)
                return inferd_fail_param(err, INFERD_E_INVALID, "outputs",
                                         "output '%s' is asked for twice", o->name);
        json_t *bd = json_object_get(p, "binary_data");
        o->binary = bd ? json_is_true(bd) : r->binary_default;
        int rc = read_shm(p, o->name, &o->shm, err);
        if (rc == 0 && o->shm.on)
            rc = shm_served(c, o->name, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- the response ---- */

/* The bytes of @p t (contiguous by construction here; a BYTES tensor's
 * storage is its encoded elements). */
static uint64_t tensor_bytes(const inferd_tensor *t)
{
    return t->elem == INFERD_ELEM_BYTES ? inferd_storage_bytes(t->storage) - t->offset
                                        : inferd_tensor_nbytes(t);
}

/* @p t's elements as a JSON array (flat, row-major, as KServe sends). */
static json_t *data_json(const inferd_tensor *t, const char *name, inferd_error *err)
{
    const uint64_t n = inferd_tensor_numel(t);
    if (n > KT_JSON_MAX) {
        inferd_fail_param(err, INFERD_E_INVALID, "binary_data",
                          "output '%s' has %llu elements: ask for binary_data or shared memory",
                          name, (unsigned long long)n);
        return NULL;
    }
    json_t *a = json_array();
    const char *p = inferd_tensor_data(t);
    const inferd_elem e = t->elem;
    if (e == INFERD_ELEM_BYTES) {
        const uint64_t len = tensor_bytes(t);
        for (uint64_t at = 0; a && at + 4 <= len;) {
            uint32_t k;
            memcpy(&k, p + at, 4);
            json_t *sv = json_stringn(p + at + 4, k);
            if (!sv) {
                json_decref(a);
                inferd_fail_param(err, INFERD_E_INVALID, "binary_data",
                                  "output '%s' holds bytes that are not UTF-8 text: ask for "
                                  "binary_data",
                                  name);
                return NULL;
            }
            json_array_append_new(a, sv);
            at += 4 + (uint64_t)k;
        }
        return a;
    }
    const size_t esz = inferd_elem_size(e);
    for (uint64_t i = 0; a && i < n; i++) {
        const char *q = p + i * esz;
        json_t *v;
        switch (e) {
        case INFERD_ELEM_BOOL: v = json_boolean(*(const uint8_t *)q != 0); break;
        case INFERD_ELEM_U8: v = json_integer(*(const uint8_t *)q); break;
        case INFERD_ELEM_U16: v = json_integer(*(const uint16_t *)q); break;
        case INFERD_ELEM_U32: v = json_integer(*(const uint32_t *)q); break;
        case INFERD_ELEM_U64: v = json_integer((json_int_t) * (const uint64_t *)q); break;
        case INFERD_ELEM_I8: v = json_integer(*(const int8_t *)q); break;
        case INFERD_ELEM_I16: v = json_integer(*(const int16_t *)q); break;
        case INFERD_ELEM_I32: v = json_integer(*(const int32_t *)q); break;
        case INFERD_ELEM_I64: v = json_integer(*(const int64_t *)q); break;
        case INFERD_ELEM_F16: v = json_real(inferd_f16_to_f32(*(const inferd_f16 *)q)); break;
        case INFERD_ELEM_BF16: v = json_real(inferd_bf16_to_f32(*(const inferd_bf16 *)q)); break;
        case INFERD_ELEM_F32: v = json_real(*(const float *)q); break;
        default: v = json_real(*(const double *)q); break;
        }
        json_array_append_new(a, v);
    }
    return a;
}

/* Write input @p in as output @p o of the identity; its JSON entry into
 * @p outs, binary bytes appended to @p bin. */
static int write_output(http_conn *c, kt_req *r, const kt_in *in, const kt_out *o, json_t *outs,
                        inferd_buf *bin, inferd_error *err)
{
    const uint64_t nbytes = tensor_bytes(&in->t);
    json_t *shape = json_array();
    for (uint32_t d = 0; d < in->t.ndim; d++)
        json_array_append_new(shape, json_integer(in->t.shape[d]));
    json_t *entry = json_pack("{s:s,s:s,s:o}", "name", o->name, "datatype",
                              inferd_elem_name(in->t.elem), "shape", shape);
    if (!entry)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
    int rc = 0;
    if (o->shm.on) {
        if (o->shm.size < nbytes) {
            json_decref(entry);
            return inferd_fail_param(err, INFERD_E_INVALID, "shared_memory_byte_size",
                                     "shared memory size specified with the request for output "
                                     "'%s' should be at least %llu bytes to hold the results",
                                     o->name, (unsigned long long)nbytes);
        }
        inferd_storage *s = NULL;
        rc = inferd_regions_view(c->srv->regions, o->shm.region, o->shm.offset, nbytes, true, &s,
                                 err);
        if (rc < 0) {
            json_decref(entry);
            return rc;
        }
        bool in_place = false;
        for (size_t k = 0; k < r->n_in && rc == 0; k++) {
            if (!inferd_regions_overlap(s, r->in[k].t.storage))
                continue;
            /* Exactly the input's bytes: identity in place, nothing to do. */
            if (&r->in[k] == in && inferd_storage_data(s) == inferd_tensor_data(&in->t))
                in_place = true;
            else
                rc = inferd_fail_param(err, INFERD_E_INVALID, "shared_memory_region",
                                       "output '%s' overlaps input '%s' in shared memory", o->name,
                                       r->in[k].name);
        }
        if (rc == 0 && !in_place && nbytes)
            memcpy(inferd_storage_data(s), inferd_tensor_data(&in->t), (size_t)nbytes);
        if (rc == 0)
            rc = inferd_regions_check(s, err);
        inferd_storage_unref(s);
        if (rc == 0)
            json_object_set_new(entry, "parameters",
                                json_pack("{s:s,s:I,s:I}", "shared_memory_region", o->shm.region,
                                          "shared_memory_byte_size", (json_int_t)nbytes,
                                          "shared_memory_offset", (json_int_t)o->shm.offset));
    } else if (o->binary) {
        if (inferd_buf_add(bin, inferd_tensor_data(&in->t), (size_t)nbytes) < 0)
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for output '%s'", o->name);
        else
            json_object_set_new(entry, "parameters",
                                json_pack("{s:I}", "binary_data_size", (json_int_t)nbytes));
    } else {
        json_t *data = data_json(&in->t, o->name, err);
        if (!data)
            rc = err->code ? err->code : INFERD_E_NOMEM;
        else
            json_object_set_new(entry, "data", data);
    }
    if (rc < 0) {
        json_decref(entry);
        return rc;
    }
    json_array_append_new(outs, entry);
    return 0;
}

/* The input that output @p name answers (OUTPUTn <- INPUTn), or NULL. */
static const kt_in *identity_source(const kt_req *r, const char *name)
{
    if (strncmp(name, "OUTPUT", 6) != 0)
        return NULL;
    char want[KT_NAME_MAX];
    snprintf(want, sizeof(want), "INPUT%s", name + 6);
    for (size_t k = 0; k < r->n_in; k++)
        if (strcmp(r->in[k].name, want) == 0)
            return &r->in[k];
    return NULL;
}

void inferd__kserve_identity(http_conn *c, const char *m, json_t *body)
{
    inferd_error e = {0};
    kt_req *r = inferd_calloc(1, sizeof(*r));
    json_t *outs = json_array();
    inferd_buf bin = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    if (!r || !outs) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request");
        goto done;
    }
    if (read_request(c, body, r, &e) < 0)
        goto fail;
    for (size_t k = 0; k < r->n_in; k++)
        if (strncmp(r->in[k].name, "INPUT", 5) != 0) {
            inferd_fail_param(&e, INFERD_E_INVALID, "inputs",
                              "identity model '%s' takes inputs INPUT0, INPUT1, ...; not '%s'", m,
                              r->in[k].name);
            goto fail;
        }
    if (r->n_out == 0) { /* every output */
        for (size_t k = 0; k < r->n_in; k++) {
            kt_out *o = &r->out[r->n_out++];
            snprintf(o->name, sizeof(o->name), "OUTPUT%s", r->in[k].name + 5);
            o->binary = r->binary_default;
        }
    }
    for (size_t k = 0; k < r->n_out; k++) {
        const kt_in *src = identity_source(r, r->out[k].name);
        if (!src) {
            inferd_fail_param(&e, INFERD_E_INVALID, "outputs",
                              "identity model '%s' has no output '%s' (OUTPUTn for each INPUTn)", m,
                              r->out[k].name);
            goto fail;
        }
        if (write_output(c, r, src, &r->out[k], outs, &bin, &e) < 0)
            goto fail;
    }
    /* Inputs read in place: did their regions hold until now? */
    for (size_t k = 0; k < r->n_in; k++)
        if (r->in[k].shm.on && inferd_regions_check(r->in[k].t.storage, &e) < 0)
            goto fail;
    json_t *resp =
        json_pack("{s:s,s:s,s:O}", "model_name", m, "model_version", "1", "outputs", outs);
    json_t *id = json_object_get(body, "id");
    if (resp && json_is_string(id))
        json_object_set(resp, "id", id);
    if (bin.len == 0) {
        inferd__http_json(c, 200, resp);
        goto done;
    }
    /* JSON, then the binary outputs in order. */
    char *js = resp ? json_dumps(resp, JSON_COMPACT) : NULL; /* inferd_malloc'd */
    json_decref(resp);
    size_t jn = js ? strlen(js) : 0;
    char *all = js ? inferd_malloc(jn + bin.len) : NULL;
    if (!all) {
        inferd_free(js);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the response");
        goto done;
    }
    memcpy(all, js, jn);
    memcpy(all + jn, bin.p, bin.len);
    inferd_free(js);
    inferd__http_text(c, 200, "application/octet-stream", all, jn + bin.len);
    char hl[32];
    snprintf(hl, sizeof(hl), "%zu", jn);
    if (c->resp)
        httpd_resp_header(c->resp, "Inference-Header-Content-Length", hl);
    goto done;
fail:
    inferd__http_fail(c, &e);
done:
    if (r)
        kt_free(r);
    inferd_free(r);
    json_decref(outs);
    inferd_buf_free(&bin);
}
