/*-------------------------------------------------------------------------
 * store.h
 *	  The consent tables, read as their owner (store.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_STORE_H
#define GDPRCRM_STORE_H

typedef void (*PurposeRowFn) (const char *name, int bit, const char *lawful_basis,
							 bool allowed_when_restricted, void *arg);
typedef void (*StateRowFn) (int64 subject, uint64 consented, uint64 objected,
							bool restricted, bool erased, void *arg);

extern void store_scan_purposes(PurposeRowFn fn, void *arg);
extern void store_scan_subject_states(const int64 *subjects, int count,
									  StateRowFn fn, void *arg);

#endif							/* GDPRCRM_STORE_H */
