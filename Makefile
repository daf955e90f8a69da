# gdprcrm build, on PGXS.
#
# The control file is the one source of the version.  Tests run against
# temporary instances configured by test/regress.conf (preload plus a test
# key command), so they never touch a server of yours:
#   make check-regress | check-isolation | check-tap   (after make install)
# test/run does all of it, dependencies included, and prints the summary.

EXTENSION   = gdprcrm
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big  = gdprcrm
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA        = $(sort $(wildcard src/sql/$(EXTENSION)--*.sql))

# Warnings are errors by default; WERROR= turns that off for a compiler newer
# than the ones this code is tested with.
WERROR     ?= -Werror
PG_CFLAGS   = -Wall -Wextra $(WERROR)
# PostgreSQL's own headers are not -Wextra clean; reading them as system
# headers keeps every warning on for our code without noise from theirs.
PG_CPPFLAGS = -isystem $(includedir_server)
SHLIB_LINK  = -lsodium

TEST_CONF   = --temp-config=$(srcdir)/test/regress.conf

REGRESS      = setup keyring random_bytes encrypted_types shredding blind_index crm consent tenancy data_guard identify
REGRESS_OPTS = --temp-instance=tmp_regress $(TEST_CONF)

ISOLATION      = nonces shred_visibility key_creation identify_race consent_withdrawal team_membership import_race identify_merge_race
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --temp-instance=tmp_isolation $(TEST_CONF)

TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

EXTRA_CLEAN = results output_iso tmp_check tmp_regress tmp_isolation regression.diffs regression.out \
              test/bench/nonce_rate

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# After the include, which empties it: one line per assertion, so that
# test/run can count them.
PROVE_FLAGS = --verbose

ifeq ($(EXTVERSION),)
$(error could not read default_version from $(EXTENSION).control)
endif
# The default version is reached by a base script or by an upgrade script.
ifeq ($(wildcard src/sql/$(EXTENSION)--$(EXTVERSION).sql src/sql/$(EXTENSION)--*--$(EXTVERSION).sql),)
$(error no extension script in src/sql/ leads to version $(EXTVERSION))
endif

# One target per suite so that a failure in one does not hide the others.
.PHONY: check-regress check-isolation check-tap
check-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
check-isolation:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
check-tap:
	$(prove_installcheck)
