/*-------------------------------------------------------------------------
 * secret_memory.h
 *	  Memory for unwrapped keys: locked where the system allows, left out of
 *	  core dumps, zeroed when freed (secret_memory.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_SECRET_MEMORY_H
#define GDPRCRM_SECRET_MEMORY_H

#include "utils/palloc.h"

/* What a region holds; gdprcrm.key_memory() reports by area. */
typedef enum SecretArea
{
	SECRET_AREA_ROOT_KEYS,		/* keyring.c: root and purpose keys */
	SECRET_AREA_DATABASE_KEYS,	/* database_keys.c */
	SECRET_AREA_KEY_CACHE,		/* subject_keys.c: the cache's key slab */
	SECRET_AREA_TRANSIENT,		/* buffers of secret_memory_alloc */
	SECRET_AREA_GENERATOR,		/* csprng.c's state: the next keys drawn */
	SECRET_AREA_COUNT
} SecretArea;

/* Flags of secret_memory_region. */
#define SECRET_INHERITED	0x01	/* children of fork(2) keep it, locked */
#define SECRET_MUST_LOCK	0x02	/* NULL rather than unlocked memory */

extern void secret_memory_init(void);
extern void *secret_memory_region(SecretArea area, size_t size, int flags);
extern bool secret_memory_protect_readonly(void *region);
extern void *secret_memory_alloc(MemoryContext context, size_t size);
extern void secret_memory_free(void *buffer);

#endif							/* GDPRCRM_SECRET_MEMORY_H */
