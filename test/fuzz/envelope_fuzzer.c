/*-------------------------------------------------------------------------
 * envelope_fuzzer.c
 *	  libFuzzer harness for the ciphertext envelope decoder (envelope.c).
 *
 * The first input byte b selects what the rest of the input is used for:
 *
 *	  expected kind = 1 + b % 3        (text, jsonb, bytea)
 *	  mode          = (b / 3) % 3      0: binary envelope
 *	                                   1: text form
 *	                                   2: both
 *
 * Binary: envelope_decode runs on the rest for the expected kind.  When it
 * accepts, the description it returns must be consistent with the input:
 * header at the start of the buffer, nonce and sealed part inside it with
 * the nonce length of the cipher, at least a tag of sealed bytes, lengths
 * adding up to the input length, and the header equal to the one
 * envelope_write_header produces from the decoded fields.
 *
 * Text form: envelope_from_text decodes the rest into a buffer as large as
 * the text.  When it accepts, envelope_to_text of the decoded bytes must
 * give back exactly the input text (unpadded URL-safe base64 has a single
 * encoding of each byte string, and libsodium rejects non-zero trailing
 * bits), and the decoded bytes are then fed to envelope_decode as above.
 *
 * Every buffer handed to the code under test is exactly as large as its
 * contents, so that AddressSanitizer reports any read past the end.  A
 * broken invariant calls abort(), which libFuzzer reports as a crash.
 *
 * Build and run with test/fuzz/run.sh.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "envelope.h"

int			LLVMFuzzerInitialize(int *argc, char ***argv);
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * fail
 *	  Report a broken invariant and abort.
 */
static void
fail(const char *what)
{
	fprintf(stderr, "envelope_fuzzer: invariant violated: %s\n", what);
	abort();
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
			fail(#cond); \
	} while (0)

/*
 * check_status
 *	  Every status, known or not, must have a detail sentence.
 */
static void
check_status(EnvelopeStatus status)
{
	CHECK(envelope_status_detail(status) != NULL);
	CHECK((int) status >= (int) ENVELOPE_OK &&
		  (int) status <= (int) ENVELOPE_WRONG_KIND);
}

/*
 * decode_and_check
 *	  Run envelope_decode on len bytes at buf and check what it accepts.
 */
static void
decode_and_check(const uint8_t *buf, size_t len, EnvelopeKind kind)
{
	Envelope	env;
	EnvelopeStatus status;
	uint8_t		header[ENVELOPE_HEADER_BYTES];
	size_t		expected_nonce;

	memset(&env, 0, sizeof(env));
	status = envelope_decode(buf, len, kind, &env);
	check_status(status);

	if (len < ENVELOPE_HEADER_BYTES)
		CHECK(status == ENVELOPE_TRUNCATED);
	if (status != ENVELOPE_OK)
		return;

	CHECK(env.cipher == ENVELOPE_CIPHER_XCHACHA20POLY1305 ||
		  env.cipher == ENVELOPE_CIPHER_AES256GCM);
	CHECK(env.kind == kind);
	expected_nonce = env.cipher == ENVELOPE_CIPHER_XCHACHA20POLY1305 ? 24 : 12;

	CHECK(env.header == buf);
	CHECK(env.nonce_len == expected_nonce);
	CHECK(env.nonce_len == envelope_nonce_bytes(env.cipher));
	CHECK(env.nonce >= buf && env.nonce <= buf + len);
	CHECK(env.nonce_len <= (size_t) (buf + len - env.nonce));
	CHECK(env.nonce == buf + ENVELOPE_HEADER_BYTES);
	CHECK(env.sealed == env.nonce + env.nonce_len);
	CHECK(env.sealed_len >= ENVELOPE_TAG_BYTES);
	CHECK(env.sealed_len <= (size_t) (buf + len - env.sealed));
	CHECK(ENVELOPE_HEADER_BYTES + env.nonce_len + env.sealed_len == len);
	CHECK(envelope_size(env.cipher, env.sealed_len - ENVELOPE_TAG_BYTES) ==
		  len);

	envelope_write_header(header, env.cipher, env.kind, env.subject,
						  env.key_version);
	CHECK(memcmp(header, env.header, ENVELOPE_HEADER_BYTES) == 0);

	/* The same envelope is refused by the other two types. */
	for (int k = ENVELOPE_KIND_TEXT; k <= ENVELOPE_KIND_BYTEA; k++)
	{
		Envelope	other;

		if (k == (int) kind)
			continue;
		status = envelope_decode(buf, len, (EnvelopeKind) k, &other);
		check_status(status);
		CHECK(status == ENVELOPE_WRONG_KIND);
	}
}

/*
 * text_and_check
 *	  Run envelope_from_text on len bytes of text; round-trip what it
 *	  accepts and decode the bytes it produced.
 */
static void
text_and_check(const char *text, size_t len, EnvelopeKind kind)
{
	uint8_t    *bin;
	uint8_t    *exact;
	char	   *again;
	size_t		bin_len = 0;
	size_t		text_size;

	/* bin_size is the text length; malloc(1) only so that 0 is portable */
	bin = malloc(len > 0 ? len : 1);
	if (bin == NULL)
		abort();
	if (!envelope_from_text(text, len, bin, len, &bin_len))
	{
		free(bin);
		return;
	}

	CHECK(envelope_text_is_prefixed(text, len));
	CHECK(bin_len <= len);

	/* Move the bytes to a buffer of their exact size for ASan. */
	exact = malloc(bin_len > 0 ? bin_len : 1);
	if (exact == NULL)
		abort();
	memcpy(exact, bin, bin_len);
	free(bin);

	text_size = envelope_text_size(bin_len);
	CHECK(text_size == len + 1);
	again = malloc(text_size);
	if (again == NULL)
		abort();
	envelope_to_text(exact, bin_len, again, text_size);
	CHECK(again[len] == '\0');
	CHECK(strlen(again) == len);
	CHECK(memcmp(again, text, len) == 0);
	free(again);

	decode_and_check(exact, bin_len, kind);
	free(exact);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	if (sodium_init() < 0)
	{
		fprintf(stderr, "envelope_fuzzer: sodium_init failed\n");
		abort();
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	EnvelopeKind kind;
	int			mode;
	const uint8_t *rest;
	size_t		rest_len;

	if (size < 1)
		return 0;
	kind = (EnvelopeKind) (1 + data[0] % 3);
	mode = (data[0] / 3) % 3;
	rest = data + 1;
	rest_len = size - 1;

	if (mode == 0 || mode == 2)
		decode_and_check(rest, rest_len, kind);
	if (mode == 1 || mode == 2)
		text_and_check((const char *) rest, rest_len, kind);
	return 0;
}
