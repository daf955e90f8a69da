/*-------------------------------------------------------------------------
 * owner_query.h
 *	  Queries on gdprcrm's own tables, run as their owner under the latest
 *	  snapshot (owner_query.c).  Each module writes the SQL of its tables;
 *	  this is how it runs it.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_OWNER_QUERY_H
#define GDPRCRM_OWNER_QUERY_H

#include "executor/spi.h"

/* The schema of every gdprcrm object (gdprcrm.control). */
#define GDPRCRM_SCHEMA "gdprcrm"

/* The caller's identity, saved by owner_query_begin for owner_query_end. */
typedef struct OwnerQuery
{
	Oid			saved_user;
	int			saved_context;
} OwnerQuery;

extern void owner_query_begin(OwnerQuery *query);
extern bool owner_query_begin_if_installed(OwnerQuery *query);
extern void owner_query_end(OwnerQuery *query);
extern SPIPlanPtr owner_query_prepare(SPIPlanPtr *plan, const char *sql,
									  int nargs, Oid *argtypes);
extern Snapshot owner_query_snapshot(void);
extern uint64 owner_query_read(SPIPlanPtr plan, Datum *values, long limit,
							   const char *table);
extern uint64 owner_query_write(SPIPlanPtr plan, Datum *values, int expected,
								const char *table);
extern uint64 owner_query_execute(SPIPlanPtr *plan, const char *sql, int nargs,
								  Oid *argtypes, Datum *values, int expected,
								  const char *table);

#endif							/* GDPRCRM_OWNER_QUERY_H */
