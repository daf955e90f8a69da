/*-------------------------------------------------------------------------
 * restricted.c
 *	  Refuse restricted data in CRM properties: payment card numbers and
 *	  special categories of personal data (GDPR Art. 9 and 10).
 *
 * gdprcrm.check_unrestricted(jsonb, what) walks a document once and raises
 * ERRCODE_CHECK_VIOLATION at the first problem, naming its JSON path and
 * never its value.  The CRM tables call it from CHECK constraints, so it
 * runs on every write, whoever writes.
 *
 * Card numbers: a run of 13 to 19 digits, single spaces or dashes allowed
 * between digits, that starts with a card network digit (2 to 6) and
 * passes the Luhn check, in any string or integer value.  The first-digit
 * rule keeps millisecond timestamps (1...) and most identifiers out.
 *
 * Special categories: an object key naming one, compared word by word
 * ("healthStatus" and "health_status" are the words health, status) with
 * the terms of gdprcrm.special_category_keys ("sexual_orientation" matches
 * the words sexual, orientation in a row).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "compat.h"
#include "guc.h"

#define CARD_MIN_DIGITS 13
#define CARD_MAX_DIGITS 19
#define MAX_WORDS 32
#define MAX_WORD_LEN 64
#define MAX_DEPTH 64

/* One level of the path to the current value. */
typedef struct PathLevel
{
	bool		in_array;
	int			index;			/* next element's index, for arrays */
	const char *key;			/* current key, for objects; not terminated */
	int			key_len;
} PathLevel;

typedef struct Words
{
	int			count;
	char		word[MAX_WORDS][MAX_WORD_LEN];
} Words;

/*
 * split_words
 *	  Lower-case words of a key: split at anything not a letter or digit
 *	  and where a lower-case letter is followed by an upper-case one.
 */
static void
split_words(const char *s, int len, Words *out)
{
	int			cur = 0;

	out->count = 0;
	for (int i = 0; i <= len && out->count < MAX_WORDS; i++)
	{
		unsigned char c = i < len ? (unsigned char) s[i] : 0;
		bool		alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9');
		bool		camel_break = alnum && cur > 0 && c >= 'A' && c <= 'Z' &&
			i > 0 && s[i - 1] >= 'a' && s[i - 1] <= 'z';

		if ((!alnum || camel_break) && cur > 0)
		{
			out->word[out->count][cur] = '\0';
			out->count++;
			cur = 0;
		}
		if (alnum && out->count < MAX_WORDS && cur < MAX_WORD_LEN - 1)
			out->word[out->count][cur++] = (char) ((c >= 'A' && c <= 'Z') ? c + 32 : c);
	}
}

/*
 * special_category_term
 *	  The configured term a key names, or NULL.  The list is short and keys
 *	  are short, so a direct scan is cheaper than any index of it.
 */
static const char *
special_category_term(const char *key, int key_len)
{
	Words		key_words;
	const char *list = gdprcrm_special_category_keys;

	if (list == NULL || *list == '\0')
		return NULL;
	split_words(key, key_len, &key_words);
	if (key_words.count == 0)
		return NULL;

	while (*list)
	{
		const char *end = strchr(list, ',');
		int			term_len = end ? (int) (end - list) : (int) strlen(list);
		Words		term_words;

		split_words(list, term_len, &term_words);
		for (int start = 0; term_words.count > 0 &&
			 start + term_words.count <= key_words.count; start++)
		{
			int			w = 0;

			while (w < term_words.count &&
				   strcmp(key_words.word[start + w], term_words.word[w]) == 0)
				w++;
			if (w == term_words.count)
			{
				/* Report the term as configured, trimmed. */
				while (term_len > 0 && (*list == ' '))
				{
					list++;
					term_len--;
				}
				return pnstrdup(list, term_len);
			}
		}
		if (!end)
			break;
		list = end + 1;
	}
	return NULL;
}

static bool
luhn_valid(const char *digits, int n)
{
	int			sum = 0;

	for (int i = 0; i < n; i++)
	{
		int			d = digits[n - 1 - i] - '0';

		if (i % 2 == 1)
		{
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

/*
 * contains_card_number
 *	  Whether s holds a card-number-like digit run (see the file header).
 *	  Digits are collected into a local buffer that is zeroed afterwards.
 */
static bool
contains_card_number(const char *s, int len)
{
	char		digits[CARD_MAX_DIGITS + 1];
	int			i = 0;
	bool		found = false;

	while (i < len && !found)
	{
		int			n = 0;
		bool		too_long = false;

		if (s[i] < '0' || s[i] > '9')
		{
			i++;
			continue;
		}
		/* A run: digits, with single separators between digits. */
		while (i < len)
		{
			if (s[i] >= '0' && s[i] <= '9')
			{
				if (n < CARD_MAX_DIGITS)
					digits[n] = s[i];
				else
					too_long = true;
				n++;
				i++;
			}
			else if ((s[i] == ' ' || s[i] == '-') && i + 1 < len &&
					 s[i + 1] >= '0' && s[i + 1] <= '9')
				i++;
			else
				break;
		}
		if (!too_long && n >= CARD_MIN_DIGITS && digits[0] >= '2' &&
			digits[0] <= '6' && luhn_valid(digits, n))
			found = true;
	}
	memset(digits, 0, sizeof(digits));
	return found;
}

/*
 * append_path
 *	  Render the JSON path of the current position, as in $.a."b c"[2];
 *	  with hide_last_key, the innermost key is shown as <key>.
 */
static void
append_path(StringInfo buf, const PathLevel *levels, int depth, bool hide_last_key)
{
	appendStringInfoChar(buf, '$');
	for (int d = 0; d < depth; d++)
	{
		const PathLevel *l = &levels[d];

		if (l->in_array)
			appendStringInfo(buf, "[%d]", l->index - 1);
		else if (l->key != NULL && hide_last_key && d == depth - 1)
			appendStringInfoString(buf, ".<key>");
		else if (l->key != NULL)
		{
			bool		plain = l->key_len > 0;

			for (int i = 0; i < l->key_len && plain; i++)
			{
				char		c = l->key[i];

				plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
					(c >= '0' && c <= '9' && i > 0) || c == '_';
			}
			if (plain)
				appendStringInfo(buf, ".%.*s", l->key_len, l->key);
			else
			{
				appendStringInfoString(buf, ".\"");
				for (int i = 0; i < l->key_len; i++)
				{
					if (l->key[i] == '"' || l->key[i] == '\\')
						appendStringInfoChar(buf, '\\');
					appendStringInfoChar(buf, l->key[i]);
				}
				appendStringInfoChar(buf, '"');
			}
		}
	}
}

static void
refuse_card(const char *what, const PathLevel *levels, int depth, bool in_key)
{
	StringInfoData path;

	initStringInfo(&path);
	/* When the number is the key itself, the path must not show it. */
	append_path(&path, levels, depth, in_key);
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("%s at %s looks like a payment card number", what, path.data),
			 errdetail("Payment card numbers must not be stored in the CRM; the value is not shown."),
			 errhint("Store only a token or the last four digits from the payment provider.")));
}

/*
 * gdprcrm.check_unrestricted(value jsonb, what text) -> boolean
 *	  True when value holds no restricted data; otherwise raises
 *	  ERRCODE_CHECK_VIOLATION naming what (e.g. "event property") and the
 *	  JSON path, never the value.
 */
PG_FUNCTION_INFO_V1(gdprcrm_check_unrestricted);
Datum
gdprcrm_check_unrestricted(PG_FUNCTION_ARGS)
{
	Jsonb	   *value = PG_GETARG_JSONB_P(0);
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PathLevel	levels[MAX_DEPTH];
	int			depth = 0;
	JsonbIterator *it = JsonbIteratorInit(&value->root);
	JsonbValue	v;
	JsonbIteratorToken token;

	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (token)
		{
			case WJB_BEGIN_ARRAY:
			case WJB_BEGIN_OBJECT:
				if (v.type == jbvArray && v.val.array.rawScalar)
					break;
				if (depth > 0 && levels[depth - 1].in_array)
					levels[depth - 1].index++;
				if (depth == MAX_DEPTH)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("%s is nested more than %d levels deep", what, MAX_DEPTH)));
				levels[depth].in_array = (token == WJB_BEGIN_ARRAY);
				levels[depth].index = 0;
				levels[depth].key = NULL;
				levels[depth].key_len = 0;
				depth++;
				break;
			case WJB_END_ARRAY:
			case WJB_END_OBJECT:
				if (depth > 0 && levels[depth - 1].in_array == (token == WJB_END_ARRAY))
					depth--;
				break;
			case WJB_KEY:
				{
					const char *term;

					levels[depth - 1].key = v.val.string.val;
					levels[depth - 1].key_len = v.val.string.len;
					term = special_category_term(v.val.string.val, v.val.string.len);
					if (term != NULL)
					{
						StringInfoData path;

						initStringInfo(&path);
						append_path(&path, levels, depth, false);
						ereport(ERROR,
								(errcode(ERRCODE_CHECK_VIOLATION),
								 errmsg("%s at %s is special-category personal data (%s)",
										what, path.data, term),
								 errdetail("Keys naming a special category of GDPR Art. 9 or 10 are refused; the value is not shown."),
								 errhint("Remove the property, or ask an administrator to review gdprcrm.special_category_keys.")));
					}
					if (contains_card_number(v.val.string.val, v.val.string.len))
						refuse_card(what, levels, depth, true);
					break;
				}
			case WJB_ELEM:
				if (depth > 0 && levels[depth - 1].in_array)
					levels[depth - 1].index++;
				/* FALLTHROUGH */
			case WJB_VALUE:
				if (v.type == jbvString &&
					contains_card_number(v.val.string.val, v.val.string.len))
					refuse_card(what, levels, depth, false);
				else if (v.type == jbvNumeric)
				{
					char	   *digits = DatumGetCString(DirectFunctionCall1(numeric_out,
																			 NumericGetDatum(v.val.numeric)));

					if (contains_card_number(digits, strlen(digits)))
						refuse_card(what, levels, depth, false);
					pfree(digits);
				}
				break;
			default:
				break;
		}
	}
	PG_RETURN_BOOL(true);
}
