/*-------------------------------------------------------------------------
 * guc.h
 *	  Every gdprcrm.* setting; definitions and documentation in guc.c.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_GUC_H
#define GDPRCRM_GUC_H

#include "envelope.h"

/* Shell command that prints the root key; NULL or empty for the dev key. */
extern char *gdprcrm_key_command;

/* During a root key rotation: shell command that prints the old key. */
extern char *gdprcrm_previous_key_command;

/* Cipher for newly encrypted values (an EnvelopeCipher). */
extern int	gdprcrm_cipher;

/* Most subject data keys one backend keeps unwrapped. */
extern int	gdprcrm_key_cache_size;

/* Raise, rather than return NULL, for values of erased subjects. */
extern bool gdprcrm_strict_erasure;

/* Seconds a subject in the trash stays restorable (read in SQL). */
extern int	gdprcrm_trash_retention;

/* Comma-separated terms naming special categories of personal data. */
extern char *gdprcrm_special_category_keys;

/* The session's declared purpose of processing; empty when none. */
extern char *gdprcrm_purpose;
extern uint64 gdprcrm_purpose_generation;

extern void guc_init(void);

#endif							/* GDPRCRM_GUC_H */
