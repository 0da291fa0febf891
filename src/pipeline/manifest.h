/* A pipeline's manifest, parsed and checked (docs/pipeline.md, Manifest).
 * Internal to src/pipeline. */
#ifndef INFERD_PIPELINE_MANIFEST_H
#define INFERD_PIPELINE_MANIFEST_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/channel.h"
#include "inferd/error.h"

#define PL_NAME_MAX 64

typedef struct pl_channel {
    char name[PL_NAME_MAX];
    inferd_channel_spec spec; /* max_subscribers: its subscribers' count */
    int publisher;            /* node index; -1: the pipeline's input */
    bool is_input, is_output;
} pl_channel;

typedef enum pl_kind { PL_IDENTITY, PL_TOKENIZE, PL_DETOKENIZE, PL_LLM, PL_PYTHON } pl_kind;

typedef struct pl_node {
    char name[PL_NAME_MAX];
    pl_kind kind;
    const char *module, *cls; /* python: borrowed from json */
    json_t *options;          /* borrowed from json (an object; model paths made absolute) */
    int *in, *out;            /* channel indices */
    size_t n_in, n_out;
} pl_node;

typedef struct pl_manifest {
    json_t *json; /* owned: everything borrowed points into it */
    const char *name;
    pl_channel *ch;
    size_t n_ch;
    pl_node *nodes;
    size_t n_nodes;
    int *inputs, *outputs; /* the pipeline's, channel indices */
    size_t n_inputs, n_outputs;
    char base_dir[PATH_MAX];
    char *python_path; /* ':'-joined absolute directories (the base first) */
    char **preload;    /* (n_preload) absolute files read ahead at start: the
                        * manifest's "preload" and the built-in nodes' models */
    size_t n_preload;
} pl_manifest;

const char *inferd__pl_kind_name(pl_kind k);

/** Parse and check @p text (see inferd_pipeline_check). */
int inferd__manifest_parse(const char *text, const char *base_dir, pl_manifest **out,
                           inferd_error *err);
void inferd__manifest_free(pl_manifest *m);

/** The index of channel @p name, or -1. */
int inferd__manifest_channel(const pl_manifest *m, const char *name);

#endif
