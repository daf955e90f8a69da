/*-------------------------------------------------------------------------
 * blind_index.c
 *	  Keyed hashes for equality lookups on encrypted values, and the email
 *	  normalisation that makes lookups by email match.
 *
 * An encrypted column cannot be indexed, since every value has a fresh
 * nonce.  Its blind index is a keyed BLAKE2b hash of the (normalised)
 * plaintext, stored beside it and indexed: equal plaintexts give equal
 * hashes, and without the key the hash reveals nothing but equality.
 *
 * Each domain ('email', 'phone', ...) hashes under its own key, derived
 * from this database's blind index key (database_keys.c), so hashes of
 * one domain cannot be compared with another's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "compat.h"
#include "database_keys.h"
#include "secret_memory.h"

#define BLIND_INDEX_BYTES 16
#define DOMAIN_MAX_BYTES 255
#define DOMAIN_LABEL "gdprcrm blind index domain "

/*
 * domain_key
 *	  Derive the key of one domain into out (KEYRING_KEY_BYTES).
 */
static void
domain_key(const char *domain, size_t domain_len, unsigned char *out)
{
	crypto_generichash_state state;

	crypto_generichash_init(&state, database_keys_get(DATABASE_KEY_BLIND_INDEX),
							KEYRING_KEY_BYTES, KEYRING_KEY_BYTES);
	crypto_generichash_update(&state, (const unsigned char *) DOMAIN_LABEL,
							  sizeof(DOMAIN_LABEL) - 1);
	crypto_generichash_update(&state, (const unsigned char *) domain, domain_len);
	crypto_generichash_final(&state, out, KEYRING_KEY_BYTES);
	sodium_memzero(&state, sizeof(state));
}

/*
 * gdprcrm.blind_index(value text, domain text) -> bytea
 *	  A 16-byte keyed hash of value for equality lookups within domain.
 */
PG_FUNCTION_INFO_V1(gdprcrm_blind_index);
Datum
gdprcrm_blind_index(PG_FUNCTION_ARGS)
{
	text	   *value = PG_GETARG_TEXT_PP(0);
	text	   *domain = PG_GETARG_TEXT_PP(1);
	size_t		domain_len = VARSIZE_ANY_EXHDR(domain);
	unsigned char *key;
	bytea	   *result;

	if (domain_len == 0 || domain_len > DOMAIN_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("blind index domain must be between 1 and %d bytes",
						DOMAIN_MAX_BYTES)));

	result = palloc(VARHDRSZ + BLIND_INDEX_BYTES);
	SET_VARSIZE(result, VARHDRSZ + BLIND_INDEX_BYTES);
	key = secret_memory_alloc(CurrentMemoryContext, KEYRING_KEY_BYTES);
	domain_key(VARDATA_ANY(domain), domain_len, key);
	crypto_generichash((unsigned char *) VARDATA(result), BLIND_INDEX_BYTES,
					   (const unsigned char *) VARDATA_ANY(value),
					   VARSIZE_ANY_EXHDR(value), key, KEYRING_KEY_BYTES);
	secret_memory_free(key);
	PG_RETURN_BYTEA_P(result);
}

/*
 * gdprcrm.normalize_email(address text) -> text
 *	  The form of an email address that blind indexes are computed on:
 *	  surrounding white space removed, ASCII letters lower-cased (local part
 *	  included: mail systems treat it case-insensitively in practice), one
 *	  trailing dot of the domain removed.  Sub-addresses ("+tag") and dots
 *	  in the local part are kept: they may name different people.  An
 *	  address without exactly one '@' with text on both sides, or with
 *	  white space or control characters inside, is refused without being
 *	  echoed.
 */
PG_FUNCTION_INFO_V1(gdprcrm_normalize_email);
Datum
gdprcrm_normalize_email(PG_FUNCTION_ARGS)
{
	text	   *address = PG_GETARG_TEXT_PP(0);
	const char *in = VARDATA_ANY(address);
	size_t		len = VARSIZE_ANY_EXHDR(address);
	size_t		start = 0;
	size_t		at = 0;
	int			ats = 0;
	char	   *out;

	while (start < len && (in[start] == ' ' || in[start] == '\t' ||
						   in[start] == '\n' || in[start] == '\r'))
		start++;
	while (len > start && (in[len - 1] == ' ' || in[len - 1] == '\t' ||
						   in[len - 1] == '\n' || in[len - 1] == '\r'))
		len--;

	out = palloc(len - start + 1);
	for (size_t i = start; i < len; i++)
	{
		unsigned char c = (unsigned char) in[i];

		if (c <= 0x20 || c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid email address"),
					 errdetail("An email address cannot contain white space or control characters.")));
		if (c == '@')
		{
			ats++;
			at = i - start;
		}
		out[i - start] = (c >= 'A' && c <= 'Z') ? (char) (c + ('a' - 'A')) : (char) c;
	}
	len -= start;
	if (len > 0 && out[len - 1] == '.' && ats == 1 && at < len - 1)
		len--;
	if (ats != 1 || at == 0 || at >= len - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid email address"),
				 errdetail("An email address has exactly one \"@\" with text on both sides.")));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, len));
}
