/*-------------------------------------------------------------------------
 * store.c
 *	  The consent tables, read as their owner (owner_query.c): what is
 *	  left of the table layer, for the row filter.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/snapmgr.h"

#include "owner_query.h"
#include "store.h"

static SPIPlanPtr scan_purposes_plan = NULL;

/*
 * store_scan_purposes
 *	  Call fn for every row of gdprcrm.purposes (latest snapshot).
 */
void
store_scan_purposes(PurposeRowFn fn, void *arg)
{
	OwnerQuery	query;

	owner_query_begin(&query);
	(void) owner_query_read(owner_query_prepare(&scan_purposes_plan,
												"SELECT name, bit, lawful_basis, allowed_when_restricted"
												" FROM " GDPRCRM_SCHEMA ".purposes",
												0, NULL),
							NULL, 0, GDPRCRM_SCHEMA ".purposes");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *name = SPI_getvalue(row, desc, 1);
		int			bit = DatumGetInt16(SPI_getbinval(row, desc, 2, &isnull));
		char	   *basis = SPI_getvalue(row, desc, 3);
		bool		allowed = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));

		fn(name, bit, basis, allowed, arg);
	}
	owner_query_end(&query);
}

/*
 * store_scan_subject_states
 *	  Call fn for the state of every subject that has one (subjects NULL),
 *	  or of the given subjects: rows of gdprcrm.subject_state, and erased
 *	  subjects from the tombstones of gdprcrm.subject_keys.  A subject may
 *	  come twice, once from each.  Latest snapshot; read through a cursor,
 *	  so a million subjects do not sit in memory at once.
 */
void
store_scan_subject_states(const int64 *subjects, int count, StateRowFn fn, void *arg)
{
	static const char *const all_sql =
		"SELECT subject, consented, objected, restricted, false FROM " GDPRCRM_SCHEMA ".subject_state"
		" UNION ALL"
		" SELECT subject, 0, 0, false, true FROM " GDPRCRM_SCHEMA ".subject_keys"
		" WHERE destroyed_at IS NOT NULL";
	static const char *const some_sql =
		"SELECT subject, consented, objected, restricted, false FROM " GDPRCRM_SCHEMA ".subject_state"
		" WHERE subject OPERATOR(pg_catalog.=) ANY ($1)"
		" UNION ALL"
		" SELECT subject, 0, 0, false, true FROM " GDPRCRM_SCHEMA ".subject_keys"
		" WHERE destroyed_at IS NOT NULL AND subject OPERATOR(pg_catalog.=) ANY ($1)";
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	OwnerQuery	query;
	Portal		portal;

	owner_query_begin(&query);
	/* A read-only cursor runs on the active snapshot: make it the latest. */
	PushActiveSnapshot(owner_query_snapshot());
	if (subjects != NULL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * count);

		for (int i = 0; i < count; i++)
			elems[i] = Int64GetDatum(subjects[i]);
		values[0] = PointerGetDatum(construct_array(elems, count, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		portal = SPI_cursor_open_with_args(NULL, some_sql, 1, types, values, NULL,
										   true, CURSOR_OPT_NO_SCROLL);
	}
	else
		portal = SPI_cursor_open_with_args(NULL, all_sql, 0, NULL, NULL, NULL,
										   true, CURSOR_OPT_NO_SCROLL);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			fn(DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull)),
			   (uint64) DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull)),
			   (uint64) DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull)),
			   DatumGetBool(SPI_getbinval(row, desc, 4, &isnull)),
			   DatumGetBool(SPI_getbinval(row, desc, 5, &isnull)),
			   arg);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	PopActiveSnapshot();
	owner_query_end(&query);
}
