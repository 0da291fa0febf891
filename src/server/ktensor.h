/* KServe v2 tensors of an inference request (ktensor.c): read from JSON
 * data, binary data after the JSON, or system shared memory; and a
 * language model's input tensors as the front end's fields. Needs no
 * connection, so the request fuzz target reads requests as the doors do.
 * Not a public header. */
#ifndef INFERD_SERVER_KTENSOR_H
#define INFERD_SERVER_KTENSOR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/buf.h"
#include "inferd/error.h"
#include "inferd/frontend.h"
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

/* Where a request's tensors come from. */
typedef struct kt_src {
    const char *bin; /* binary data after the JSON (borrowed), or NULL */
    size_t bin_len;
    inferd_regions *regions; /* NULL: shared memory is not served */
} kt_src;

/**
 * Read infer request @p body's "inputs" as tensors (views of shared memory,
 * of @p src's binary data, or made from JSON data) and its "outputs" (what
 * is asked for, and how). @return 0 and *r (free with inferd__kt_free,
 * also after an error); INFERD_E_INVALID, _INVALID_TYPE, _RANGE,
 * _UNSUPPORTED, _NOT_FOUND (a region), _NOMEM, with err->param the field.
 */
int inferd__kt_read(const kt_src *src, json_t *body, kt_req *r, inferd_error *err);
void inferd__kt_free(kt_req *r);

/** @p t's elements as a JSON array (flat, row-major), or NULL and the error
 * (too many for JSON, BYTES that are not UTF-8, no memory). */
json_t *inferd__kt_data_json(const inferd_tensor *t, const char *name, inferd_error *err);

/** A language model's outputs. */
typedef enum kt_llm_out {
    KT_TEXT_OUTPUT,
    KT_OUTPUT_IDS,
    KT_LOGITS,
    KT_HIDDEN,
    KT_LLM_OUTS
} kt_llm_out;

/** What a language model's infer request @p body (inputs read into @p r)
 * asks for: the front end's fields (its "parameters", overridden by input
 * tensors of the same name, text_input as the prompt), or the prompt as
 * token ids (input_ids: *ids, owned), the outputs it wants (want[i], by
 * kt_llm_out; none named: text_output, and output_ids with input_ids) and
 * the positions of logits and hidden (the "all_logits" parameter).
 * @return 0 and *fields (a new object for inferd_fe_read[_ids] with the
 * KServe door); or the error. */
int inferd__kt_llm_fields(const kt_req *r, json_t *body, const char *model, json_t **fields,
                          int32_t **ids, size_t *n_ids, bool want[KT_LLM_OUTS], bool *all_positions,
                          inferd_error *err);

/** A language model's infer request @p body read into @p r (the outputs
 * it wants in @p want) and @p in, the front end's input with the logits
 * and hidden states kept that the outputs need: inferd__kt_read,
 * inferd__kt_llm_fields, then inferd_fe_read[_ids] with the KServe door.
 * *fields (the strings @p in borrows) and *ids live until the request is
 * submitted: free them with json_decref and inferd_free then (also after
 * an error), @p in with inferd_fe_input_free (only after success), @p r with
 * inferd__kt_free. @return 0 or the error. */
int inferd__kt_llm_input(const kt_src *src, json_t *body, const char *model, kt_req *r,
                         bool want[KT_LLM_OUTS], inferd_fe_input *in, json_t **fields,
                         int32_t **ids, inferd_error *err);

/** Run the built-in identity model @p m on infer request @p body: *resp
 * (the response object without "id"; outputs asked as binary data appended
 * to @p bin, those asked in shared memory written there). @return 0 or the
 * error. */
int inferd__kt_identity(const kt_src *src, json_t *body, const char *m, json_t **resp,
                        inferd_buf *bin, inferd_error *err);

/* What a language model's request made, once its DONE event was read. */
typedef struct kt_llm_result {
    const char *model;
    inferd_fe_request *fr; /* its logits and hidden states */
    const char *text;      /* text_output */
    size_t text_len;
    const int32_t *ids; /* output_ids */
    size_t n_ids;
    const inferd_event *done; /* finish reason, counts, seed */
} kt_llm_result;

/** The response to a language model's request @p r (the outputs it asked
 * for; with none named, those @p want says), as inferd__kt_identity makes
 * it; "parameters" gives finish_reason, prompt_tokens, completion_tokens
 * and seed. @return 0 or the error. */
int inferd__kt_llm_response(const kt_src *src, kt_req *r, const bool want[KT_LLM_OUTS],
                            const kt_llm_result *res, json_t **resp, inferd_buf *bin,
                            inferd_error *err);

#endif
