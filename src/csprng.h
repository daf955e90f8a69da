/*-------------------------------------------------------------------------
 * csprng.h
 *	  Fast, fork-safe random bytes for nonces and data keys (csprng.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_CSPRNG_H
#define GDPRCRM_CSPRNG_H

#include <stddef.h>

extern void csprng_fill(void *buf, size_t len);
extern bool csprng_state_memory(const void **start, size_t *size);
extern void csprng_on_lock_failure(void (*report) (void));

#endif							/* GDPRCRM_CSPRNG_H */
