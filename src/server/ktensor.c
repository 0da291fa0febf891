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
#include "ktensor.h"

#include "server_internal.h"

#include "doors.h"
#include "kvrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/region.h"
#include "inferd/tensor.h"
#include "inferd/tensor_json.h"

void inferd__kt_free(kt_req *r)
{
    for (size_t i = 0; i < r->n_in; i++)
        inferd_tensor_fini(&r->in[i].t);
    r->n_in = 0;
}

/* Where @p c's request takes its tensors from: its binary data, and the
 * regions its listener serves. */
static kt_src src_of(const http_conn *c)
{
    const kv_env env = inferd__kserve_env(c);
    return (kt_src){c->bin, c->bin_len, env.regions};
}

/* ---- parameters ---- */

/* Is shared memory served to the request? */
static int shm_served(const kt_src *src, const char *what, inferd_error *err)
{
    if (src->regions)
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
    const int rc = inferd_elem_from_json(t->elem, v, p);
    if (rc == INFERD_E_RANGE)
        return inferd_fail_param(
            err, INFERD_E_RANGE, "data", "%s: element %llu, %lld, is out of range for %s", what,
            (unsigned long long)i, (long long)json_integer_value(v), inferd_elem_name(t->elem));
    if (rc < 0)
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "data",
                                 "%s: element %llu is not a %s value", what, (unsigned long long)i,
                                 inferd_elem_name(t->elem));
    return 0;
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
static int read_input(const kt_src *src, json_t *j, size_t k, size_t *bin_at, kt_in *in,
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
        rc = shm_served(src, nm, err);
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
            if ((rc = inferd_regions_view(src->regions, in->shm.region, in->shm.offset, nbytes,
                                          false, &s, err)) < 0)
                return rc;
        } else {
            if (!json_is_integer(bsz) || json_integer_value(bsz) < 0)
                return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "binary_data_size",
                                         "input '%s': binary_data_size must be a size", nm);
            nbytes = (uint64_t)json_integer_value(bsz);
            if (!src->bin || nbytes > src->bin_len - *bin_at)
                return inferd_fail_param(
                    err, INFERD_E_INVALID, "binary_data_size",
                    "input '%s': binary_data_size %llu is beyond the %zu bytes of binary data "
                    "after the JSON (Inference-Header-Content-Length)",
                    nm, (unsigned long long)nbytes, src->bin ? src->bin_len - *bin_at : 0);
            /* The body lives until the request is answered: borrowed. */
            if ((rc = inferd_storage_wrap(INFERD_STORAGE_BORROWED, (char *)src->bin + *bin_at,
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

int inferd__kt_read(const kt_src *src, json_t *body, kt_req *r, inferd_error *err)
{
    memset(r, 0, sizeof(*r));
    json_t *inputs = json_object_get(body, "inputs"), *outputs = json_object_get(body, "outputs");
    json_t *params = json_object_get(body, "parameters");
    if (!inputs || json_is_null(inputs))
        return inferd_fail_param(err, INFERD_E_MISSING, "inputs",
                                 "inputs: it is required (an array of tensors)");
    if (!json_is_array(inputs))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "inputs",
                                 "inputs: expected an array of tensors");
    if (json_array_size(inputs) == 0 || json_array_size(inputs) > KT_MAX)
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
        int rc = read_input(src, j, i, &bin_at, &r->in[r->n_in], err);
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
    if (src->bin && bin_at != src->bin_len)
        return inferd_fail_param(err, INFERD_E_INVALID, "binary_data_size",
                                 "%zu bytes of binary data follow the JSON; the inputs' "
                                 "binary_data_size take %zu",
                                 src->bin_len, bin_at);
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
            rc = shm_served(src, o->name, err);
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
json_t *inferd__kt_data_json(const inferd_tensor *t, const char *name, inferd_error *err)
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
    for (uint64_t i = 0; a && i < n; i++)
        json_array_append_new(a, inferd_elem_to_json(e, p + i * esz));
    return a;
}

/* Write tensor @p t as output @p o (@p src: the input it is, for the
 * identity, else NULL); its JSON entry into @p outs, binary bytes appended
 * to @p bin. */
static int write_output(const kt_src *from, const kt_req *r, const inferd_tensor *t,
                        const kt_in *src, const kt_out *o, json_t *outs, inferd_buf *bin,
                        inferd_error *err)
{
    const uint64_t nbytes = tensor_bytes(t);
    json_t *shape = json_array();
    for (uint32_t d = 0; d < t->ndim; d++)
        json_array_append_new(shape, json_integer(t->shape[d]));
    json_t *entry = json_pack("{s:s,s:s,s:o}", "name", o->name, "datatype",
                              inferd_elem_name(t->elem), "shape", shape);
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
        rc =
            inferd_regions_view(from->regions, o->shm.region, o->shm.offset, nbytes, true, &s, err);
        if (rc < 0) {
            json_decref(entry);
            return rc;
        }
        bool in_place = false;
        for (size_t k = 0; k < r->n_in && rc == 0; k++) {
            if (!inferd_regions_overlap(s, r->in[k].t.storage))
                continue;
            /* Exactly the input's bytes: identity in place, nothing to do. */
            if (&r->in[k] == src && inferd_storage_data(s) == inferd_tensor_data(t))
                in_place = true;
            else
                rc = inferd_fail_param(err, INFERD_E_INVALID, "shared_memory_region",
                                       "output '%s' overlaps input '%s' in shared memory", o->name,
                                       r->in[k].name);
        }
        if (rc == 0 && !in_place && nbytes)
            memcpy(inferd_storage_data(s), inferd_tensor_data(t), (size_t)nbytes);
        if (rc == 0)
            rc = inferd_regions_check(s, err);
        inferd_storage_unref(s);
        if (rc == 0)
            json_object_set_new(entry, "parameters",
                                json_pack("{s:s,s:I,s:I}", "shared_memory_region", o->shm.region,
                                          "shared_memory_byte_size", (json_int_t)nbytes,
                                          "shared_memory_offset", (json_int_t)o->shm.offset));
    } else if (o->binary) {
        if (inferd_buf_add(bin, inferd_tensor_data(t), (size_t)nbytes) < 0)
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for output '%s'", o->name);
        else
            json_object_set_new(entry, "parameters",
                                json_pack("{s:I}", "binary_data_size", (json_int_t)nbytes));
    } else {
        json_t *data = inferd__kt_data_json(t, o->name, err);
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

/* Answer @p c with @p resp (taken; the request's string @p id echoed) and
 * the binary outputs @p bin after it (Inference-Header-Content-Length). */
static void send_response(http_conn *c, json_t *resp, json_t *id, const inferd_buf *bin)
{
    if (resp && json_is_string(id))
        json_object_set(resp, "id", id);
    if (bin->len == 0) {
        inferd__http_json(c, 200, resp);
        return;
    }
    char *js = resp ? json_dumps(resp, JSON_COMPACT) : NULL; /* inferd_malloc'd */
    json_decref(resp);
    size_t jn = js ? strlen(js) : 0;
    char *all = js ? inferd_malloc(jn + bin->len) : NULL;
    if (!all) {
        inferd_free(js);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the response");
        return;
    }
    memcpy(all, js, jn);
    memcpy(all + jn, bin->p, bin->len);
    inferd_free(js);
    inferd__http_text(c, 200, "application/octet-stream", all, jn + bin->len);
    char hl[32];
    snprintf(hl, sizeof(hl), "%zu", jn);
    if (c->resp)
        httpd_resp_header(c->resp, "Inference-Header-Content-Length", hl);
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

int inferd__kt_identity(const kt_src *src, json_t *body, const char *m, json_t **resp,
                        inferd_buf *bin, inferd_error *err)
{
    *resp = NULL;
    kt_req *r = inferd_calloc(1, sizeof(*r));
    json_t *outs = json_array();
    int rc = 0;
    if (!r || !outs) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
        goto done;
    }
    if ((rc = inferd__kt_read(src, body, r, err)) < 0)
        goto done;
    for (size_t k = 0; k < r->n_in; k++)
        if (strncmp(r->in[k].name, "INPUT", 5) != 0) {
            rc = inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                   "identity model '%s' takes inputs INPUT0, INPUT1, ...; not '%s'",
                                   m, r->in[k].name);
            goto done;
        }
    if (r->n_out == 0) { /* every output */
        for (size_t k = 0; k < r->n_in; k++) {
            kt_out *o = &r->out[r->n_out++];
            snprintf(o->name, sizeof(o->name), "OUTPUT%s", r->in[k].name + 5);
            o->binary = r->binary_default;
        }
    }
    for (size_t k = 0; k < r->n_out; k++) {
        const kt_in *from = identity_source(r, r->out[k].name);
        if (!from) {
            rc = inferd_fail_param(err, INFERD_E_INVALID, "outputs",
                                   "identity model '%s' has no output '%s' (OUTPUTn for each "
                                   "INPUTn)",
                                   m, r->out[k].name);
            goto done;
        }
        if ((rc = write_output(src, r, &from->t, from, &r->out[k], outs, bin, err)) < 0)
            goto done;
    }
    /* Inputs read in place: did their regions hold until now? */
    for (size_t k = 0; k < r->n_in; k++)
        if (r->in[k].shm.on && (rc = inferd_regions_check(r->in[k].t.storage, err)) < 0)
            goto done;
    *resp = json_pack("{s:s,s:s,s:O}", "model_name", m, "model_version", "1", "outputs", outs);
    if (!*resp)
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
done:
    if (r)
        inferd__kt_free(r);
    inferd_free(r);
    json_decref(outs);
    return rc;
}

void inferd__kserve_identity(http_conn *c, const char *m, json_t *body)
{
    inferd_error e = {0};
    json_t *resp = NULL;
    inferd_buf bin = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    const kt_src src = src_of(c);
    if (inferd__kt_identity(&src, body, m, &resp, &bin, &e) < 0)
        inferd__http_fail(c, &e);
    else
        send_response(c, resp, json_object_get(body, "id"), &bin);
    inferd_buf_free(&bin);
}

/* ---- language models ---- */

static const char *const k_llm_out[KT_LLM_OUTS] = {"text_output", "output_ids", "logits", "hidden"};

/* The one BYTES element of input @p in as a JSON string. */
static json_t *text_of(const kt_in *in, inferd_error *err)
{
    const char *p = inferd_tensor_data(&in->t);
    uint32_t n;
    if (in->t.elem != INFERD_ELEM_BYTES || inferd_tensor_numel(&in->t) != 1) {
        inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                          "input '%s': expected datatype BYTES with one element", in->name);
        return NULL;
    }
    memcpy(&n, p, 4); /* one element: its length, then its bytes */
    json_t *v = json_stringn(p + 4, n);
    if (!v)
        inferd_fail_param(err, INFERD_E_INVALID, "inputs", "input '%s': the text is not UTF-8",
                          in->name);
    return v;
}

/* input_ids: INT32 or INT64 ids of shape [n] or [1, n], into *ids. */
static int ids_of(const kt_in *in, int32_t **ids, size_t *n_ids, inferd_error *err)
{
    const inferd_tensor *t = &in->t;
    const bool shaped = t->ndim == 1 || (t->ndim == 2 && t->shape[0] == 1);
    if ((t->elem != INFERD_ELEM_I32 && t->elem != INFERD_ELEM_I64) || !shaped)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "input '%s': expected token ids, datatype INT32 or INT64, of "
                                 "shape [n] or [1, n]",
                                 in->name);
    const uint64_t n = inferd_tensor_numel(t);
    if (n == 0)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs", "input '%s': it is empty",
                                 in->name);
    int32_t *out = inferd_malloc(n * sizeof(int32_t));
    if (!out)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for %llu token ids",
                           (unsigned long long)n);
    const char *p = inferd_tensor_data(t);
    for (uint64_t i = 0; i < n; i++) {
        int64_t v;
        if (t->elem == INFERD_ELEM_I32) {
            int32_t x;
            memcpy(&x, p + i * 4, 4);
            v = x;
        } else {
            memcpy(&v, p + i * 8, 8);
        }
        if (v < 0 || v > INT32_MAX) {
            inferd_free(out);
            return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                     "input '%s': element %llu, %lld, is not a token id", in->name,
                                     (unsigned long long)i, (long long)v);
        }
        out[i] = (int32_t)v;
    }
    *ids = out;
    *n_ids = (size_t)n;
    return 0;
}

/* Is @p name a field of the KServe door (a parameter given as a tensor)? */
static bool door_field(const char *name)
{
    for (size_t i = 0; i < inferd__door_kserve.n_fields; i++)
        if (strcmp(inferd__door_kserve.fields[i].name, name) == 0)
            return true;
    return false;
}

/* A parameter tensor @p in into @p fields: BYTES "stop" as its strings,
 * any other as its one element. */
static int param_of(const kt_in *in, json_t *fields, inferd_error *err)
{
    const bool stop = strcmp(in->name, "stop") == 0;
    if (!stop && inferd_tensor_numel(&in->t) != 1)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "input '%s': expected one element", in->name);
    json_t *a = inferd__kt_data_json(&in->t, in->name, err);
    if (!a)
        return err->code ? err->code : INFERD_E_NOMEM;
    int rc = json_object_set(fields, in->name, stop ? a : json_array_get(a, 0));
    json_decref(a);
    return rc == 0 ? 0 : inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
}

int inferd__kt_llm_fields(const kt_req *r, json_t *body, const char *model, json_t **fields,
                          int32_t **ids, size_t *n_ids, bool want[KT_LLM_OUTS], bool *all_positions,
                          inferd_error *err)
{
    *fields = NULL;
    *ids = NULL;
    *n_ids = 0;
    memset(want, 0, KT_LLM_OUTS * sizeof(bool));
    json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "parameters",
                                 "parameters: expected an object");
    json_t *all = json_object_get(params, "all_logits");
    if (all && !json_is_null(all) && !json_is_boolean(all))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "parameters",
                                 "all_logits: expected a boolean");
    *all_positions = json_is_true(all);
    json_t *f = json_is_object(params) ? json_deep_copy(params) : json_object();
    if (!f)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    int rc = 0;
    bool text = false;
    for (size_t k = 0; k < r->n_in && rc == 0; k++) {
        const kt_in *in = &r->in[k];
        if (strcmp(in->name, "text_input") == 0) {
            json_t *v = text_of(in, err);
            rc = !v ? err->code : json_object_set_new(f, "text_input", v) == 0 ? 0 : INFERD_E_NOMEM;
            text = true;
        } else if (strcmp(in->name, "input_ids") == 0) {
            rc = ids_of(in, ids, n_ids, err);
        } else if (door_field(in->name) && strcmp(in->name, "model_name") != 0) {
            rc = param_of(in, f, err);
        } else {
            rc = inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                   "unexpected inference input '%s' for model '%s' (text_input or "
                                   "input_ids, and parameters such as max_tokens)",
                                   in->name, model);
        }
    }
    if (rc == 0 && text && *ids)
        rc = inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                               "inputs: give text_input or input_ids, not both");
    if (rc == 0 && !text && !*ids)
        rc = inferd_fail_param(err, INFERD_E_MISSING, "inputs",
                               "inputs: no text_input (BYTES, shape [1]) or input_ids (INT32 or "
                               "INT64, shape [n]) tensor");
    for (size_t k = 0; k < r->n_out && rc == 0; k++) {
        int o = 0;
        while (o < KT_LLM_OUTS && strcmp(r->out[k].name, k_llm_out[o]) != 0)
            o++;
        if (o == KT_LLM_OUTS)
            rc = inferd_fail_param(err, INFERD_E_INVALID, "outputs",
                                   "unexpected inference output '%s' for model '%s' (text_output, "
                                   "output_ids, logits or hidden)",
                                   r->out[k].name, model);
        else
            want[o] = true;
    }
    if (r->n_out == 0) { /* none named: the text, and ids for ids */
        want[KT_TEXT_OUTPUT] = true;
        want[KT_OUTPUT_IDS] = *ids != NULL;
    }
    if (rc == 0 && json_object_set_new(f, "model_name", json_string(model)) != 0)
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    if (rc < 0) {
        if (rc == INFERD_E_NOMEM && err->msg[0] == '\0')
            inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
        json_decref(f);
        inferd_free(*ids);
        *ids = NULL;
        *n_ids = 0;
        return rc;
    }
    *fields = f;
    return 0;
}

int inferd__kt_llm_input(const kt_src *src, json_t *body, const char *model, kt_req *r,
                         bool want[KT_LLM_OUTS], inferd_fe_input *in, json_t **fields,
                         int32_t **ids, inferd_error *err)
{
    *fields = NULL;
    *ids = NULL;
    size_t n_ids = 0;
    bool all = false;
    int rc;
    if ((rc = inferd__kt_read(src, body, r, err)) < 0 ||
        (rc = inferd__kt_llm_fields(r, body, model, fields, ids, &n_ids, want, &all, err)) < 0 ||
        (rc = *ids ? inferd_fe_read_ids(&inferd__door_kserve, *fields, *ids, n_ids, in, err)
                   : inferd_fe_read(&inferd__door_kserve, *fields, in, err)) < 0)
        return rc;
    const inferd_positions pos = all ? INFERD_POSITIONS_ALL : INFERD_POSITIONS_LAST;
    in->params.keep_logits = want[KT_LOGITS] ? pos : INFERD_POSITIONS_NONE;
    in->params.keep_hidden = want[KT_HIDDEN] ? pos : INFERD_POSITIONS_NONE;
    return 0;
}

/* A language model's request while it runs: what to answer with. */
typedef struct kt_llm {
    kt_req r; /* the outputs asked for (the inputs' views held until the end) */
    bool want[KT_LLM_OUTS];
    json_t *id; /* the request's "id" */
} kt_llm;

static void llm_free(void *ctx)
{
    kt_llm *L = ctx;
    if (!L)
        return;
    inferd__kt_free(&L->r);
    json_decref(L->id);
    inferd_free(L);
}

/* A tensor of @p elem and shape @p dims over @p bytes at @p p (borrowed:
 * they live until the answer is sent). */
static int borrowed(inferd_tensor *t, inferd_elem elem, uint32_t nd, const int64_t *dims,
                    const void *p, size_t bytes, inferd_error *err)
{
    static char none[8]; /* an empty tensor's storage */
    inferd_storage *s = NULL;
    int rc = inferd_storage_wrap(INFERD_STORAGE_BORROWED, p ? (void *)p : none, bytes, NULL, NULL,
                                 &s, err);
    if (rc == 0)
        rc = inferd_tensor_init(t, elem, nd, dims, NULL, 0, s, err);
    inferd_storage_unref(s);
    return rc;
}

/* Output @p o of a DONE request as a tensor. */
static int llm_tensor(const kt_llm_result *res, kt_llm_out o, inferd_tensor *t, inferd_error *err)
{
    inferd_request_outputs ko;
    if (inferd_fe_request_outputs(res->fr, &ko) < 0)
        return inferd_fail(err, INFERD_E_INTERNAL, "the request kept no outputs");
    if (o == KT_TEXT_OUTPUT) { /* one BYTES element: its length, then the text */
        inferd_storage *s = NULL;
        const uint32_t n = (uint32_t)res->text_len;
        int rc = inferd_storage_heap(4 + (size_t)n, &s, err);
        if (rc < 0)
            return rc;
        memcpy(inferd_storage_data(s), &n, 4);
        if (n)
            memcpy((char *)inferd_storage_data(s) + 4, res->text, n);
        const int64_t flat = 4 + (int64_t)n;
        rc = inferd_tensor_init(t, INFERD_ELEM_BYTES, 1, &flat, NULL, 0, s, err);
        inferd_storage_unref(s);
        if (rc == 0)
            t->shape[0] = 1; /* one element (the storage is its encoding) */
        return rc;
    }
    if (o == KT_OUTPUT_IDS) {
        const int64_t n = (int64_t)res->n_ids;
        return borrowed(t, INFERD_ELEM_I32, 1, &n, res->ids, res->n_ids * sizeof(int32_t), err);
    }
    const bool lg = o == KT_LOGITS;
    const int64_t dims[2] = {lg ? ko.n_logits : ko.n_hidden, lg ? ko.n_vocab : ko.n_embd};
    return borrowed(t, INFERD_ELEM_F32, 2, dims, lg ? (const void *)ko.logits : ko.hidden,
                    (size_t)dims[0] * (size_t)dims[1] * sizeof(float), err);
}

int inferd__kt_llm_response(const kt_src *src, kt_req *r, const bool want[KT_LLM_OUTS],
                            const kt_llm_result *res, json_t **resp, inferd_buf *bin,
                            inferd_error *err)
{
    *resp = NULL;
    json_t *outs = json_array();
    int rc = outs ? 0 : inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
    if (r->n_out == 0) /* none named: the defaults, as the request's binary_data_output says */
        for (int o = 0; o < KT_LLM_OUTS; o++)
            if (want[o]) {
                kt_out *ko = &r->out[r->n_out++];
                snprintf(ko->name, sizeof(ko->name), "%s", k_llm_out[o]);
                ko->binary = r->binary_default;
            }
    for (size_t k = 0; k < r->n_out && rc == 0; k++) {
        kt_llm_out o = KT_TEXT_OUTPUT;
        while (strcmp(r->out[k].name, k_llm_out[o]) != 0)
            o++;
        inferd_tensor t = {0};
        rc = llm_tensor(res, o, &t, err);
        if (rc == 0)
            rc = write_output(src, r, &t, NULL, &r->out[k], outs, bin, err);
        inferd_tensor_fini(&t);
    }
    if (rc == 0) {
        const inferd_event *d = res->done;
        *resp = json_pack("{s:s,s:s,s:O,s:{s:s,s:i,s:i,s:I}}", "model_name", res->model,
                          "model_version", "1", "outputs", outs, "parameters", "finish_reason",
                          inferd__gen_finish_name(d->finish), "prompt_tokens", (int)d->n_prompt,
                          "completion_tokens", (int)d->n_gen, "seed", (json_int_t)d->seed);
        if (!*resp)
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
    }
    json_decref(outs);
    return rc;
}

static void llm_answer(gen *g, http_conn *c, void *ctx)
{
    kt_llm *L = ctx;
    inferd_error e = {0};
    json_t *resp = NULL;
    inferd_buf bin = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    const kt_src src = src_of(c);
    const kt_llm_result res = {
        inferd__gen_model(g),         g->fr,   g->text.p, g->text.len, (const int32_t *)g->ids.p,
        g->ids.len / sizeof(int32_t), &g->done};
    if (inferd__kt_llm_response(&src, &L->r, L->want, &res, &resp, &bin, &e) < 0)
        inferd__http_fail(c, &e);
    else
        send_response(c, resp, L->id, &bin);
    inferd_buf_free(&bin);
}

void inferd__kserve_llm(http_conn *c, const char *m, json_t *body)
{
    inferd_error e = {0};
    kt_llm *L = inferd_calloc(1, sizeof(*L));
    if (!L) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request");
        return;
    }
    const kt_src src = src_of(c);
    json_t *fields = NULL;
    int32_t *ids = NULL;
    inferd_fe_input in;
    if (inferd__kt_llm_input(&src, body, m, &L->r, L->want, &in, &fields, &ids, &e) < 0) {
        inferd__http_fail(c, &e);
        json_decref(fields);
        inferd_free(ids);
        llm_free(L);
        return;
    }
    gen *g = inferd__gen_start(c, &in, GEN_KSERVE);
    inferd_fe_input_free(&in);
    json_decref(fields); /* stop strings were copied by submit */
    inferd_free(ids);
    if (!g) {
        llm_free(L);
        return;
    }
    g->want_ids = L->want[KT_OUTPUT_IDS];
    json_t *id = json_object_get(body, "id");
    L->id = json_incref(id);
    inferd__gen_answer(g, llm_answer, L, llm_free);
}
