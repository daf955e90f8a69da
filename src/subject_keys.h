/*-------------------------------------------------------------------------
 * subject_keys.h
 *	  Per-subject data keys: creation, per-backend cache, destruction
 *	  (subject_keys.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_SUBJECT_KEYS_H
#define GDPRCRM_SUBJECT_KEYS_H

#include "stored_key.h"

extern void subject_keys_init(void);
extern const unsigned char *subject_keys_for_encrypt(int64 subject,
													 uint32 *version);
extern const unsigned char *subject_keys_for_decrypt(int64 subject,
													 uint32 version,
													 bool *erased);
extern bool subject_keys_is_destroyed(int64 subject);

/* gdprcrm.subject_keys, for root key rotation. */
extern const StoredKeyTable subject_keys_table;

#endif							/* GDPRCRM_SUBJECT_KEYS_H */
