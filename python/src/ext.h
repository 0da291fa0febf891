/* Shared between the extension's files (not a public header). */
#ifndef INFERD_PY_EXT_H
#define INFERD_PY_EXT_H

#include <Python.h>

#include "inferd/error.h"
#include "inferd/tensor.h"

/* Raise inferd.InferdError for @p err (code, its wire name and HTTP status,
 * the field, the message; MemoryError for INFERD_E_NOMEM). Returns NULL. */
PyObject *inferd_py_raise(const inferd_error *err);
/* A TensorBuffer holding a copy of @p src (contiguous, @p shape). */
PyObject *inferd_py_buffer_copy(inferd_elem elem, uint32_t ndim, const int64_t *shape,
                                const void *src);

/* A TensorBuffer taking @p t (moved). */
PyObject *inferd_py_buffer_wrap(inferd_tensor *t);

/* channel.c */
int inferd_py_channel_init(PyObject *module);

/* pipeline.c */
int inferd_py_pipeline_init(PyObject *module);

/* client.c */
int inferd_py_client_init(PyObject *module);

/* model.c */
int inferd_py_model_init(PyObject *module);
PyObject *inferd_py_get_or_load(PyObject *self, PyObject *args, PyObject *kw);
PyObject *inferd_py_registry_info(PyObject *self, PyObject *unused);
PyObject *inferd_py_configure(PyObject *self, PyObject *args, PyObject *kw);

#endif
