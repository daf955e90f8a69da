/*-------------------------------------------------------------------------
 * random_bytes.c
 *	  gdprcrm.random_bytes: the extension's generator, reachable from SQL.
 *
 * The same generator makes every nonce and data key (csprng.c); exposing
 * it lets applications draw tokens from it and lets the test suite check
 * that two backends never draw the same bytes.  Output is not secret
 * state: the generator keeps no copy of what it hands out.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "compat.h"
#include "csprng.h"

/* Same bound as pgcrypto's gen_random_bytes: enough for any token. */
#define RANDOM_BYTES_MAX 1024

/*
 * gdprcrm.random_bytes(count integer) -> bytea
 *	  count random bytes, 1 to 1024, in a new bytea in the caller's context.
 */
PG_FUNCTION_INFO_V1(gdprcrm_random_bytes);
Datum
gdprcrm_random_bytes(PG_FUNCTION_ARGS)
{
	int32		count = PG_GETARG_INT32(0);
	bytea	   *result;

	if (count < 1 || count > RANDOM_BYTES_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("number of random bytes must be between 1 and %d",
						RANDOM_BYTES_MAX)));

	result = palloc(VARHDRSZ + count);
	SET_VARSIZE(result, VARHDRSZ + count);
	csprng_fill(VARDATA(result), count);
	PG_RETURN_BYTEA_P(result);
}
