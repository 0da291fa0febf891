/* Shared by the files of the request front end (frontend.c: served
 * models, state, submit, error faces; fields.c: the field table and the
 * reader). Not a public header. */
#ifndef INFERD_FRONTEND_INTERNAL_H
#define INFERD_FRONTEND_INTERNAL_H

#include "inferd/frontend.h"

/* The door's name for field @p f (its first spelling), or the canonical
 * name when the door does not list it. */
const char *inferd__fe_spelled(const inferd_fe_door *door, inferd_field f);

#endif
