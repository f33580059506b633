/* gojinn.h - the host functions of import module "gojinn", as a C guest
 * written for the original system declares them (all i32; host_kv_get
 * answers 0xFFFFFFFF when the key is missing or denied). Guests for the
 * tests and the README include it; build with
 *   clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -o f.wasm f.c */
#ifndef GOJINN_H
#define GOJINN_H

#include <stdint.h>

#define GOJINN_IMPORT(name) __attribute__((import_module("gojinn"), import_name(name)))
#define GOJINN_FAIL 0xFFFFFFFFu

GOJINN_IMPORT("host_log") void host_log(uint32_t level, const char *msg, uint32_t len);
GOJINN_IMPORT("host_kv_set")
uint32_t host_kv_set(const char *key, uint32_t klen, const void *val, uint32_t vlen);
GOJINN_IMPORT("host_kv_get")
uint32_t host_kv_get(const char *key, uint32_t klen, void *out, uint32_t outmax);
GOJINN_IMPORT("host_mutex_lock")
uint32_t host_mutex_lock(const char *key, uint32_t klen, uint32_t ttl_seconds);
GOJINN_IMPORT("host_mutex_unlock") uint32_t host_mutex_unlock(const char *key, uint32_t klen);
GOJINN_IMPORT("host_db_query")
uint32_t host_db_query(const char *sql, uint32_t qlen, void *out, uint32_t outmax);
GOJINN_IMPORT("host_enqueue")
uint32_t host_enqueue(const char *fn, uint32_t flen, const void *payload, uint32_t plen);

#endif
