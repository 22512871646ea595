.PHONY: run test screenshots bench messages
run:  ## run the app on http://127.0.0.1:5000 (first run: set-up, admin, demo data)
	scripts/run
test:  ## lint and run the whole test suite
	scripts/test
screenshots:  ## pages at desktop and phone sizes into screenshots/
	scripts/setup-venv && .venv/bin/python scripts/screenshots.py --out screenshots
bench:  ## list and card benchmarks on SQLite (see bench/README.md for PostgreSQL, 1M)
	scripts/setup-venv && .venv/bin/python -m bench.bench_list --backend sqlite && .venv/bin/python -m bench.bench_card --backend sqlite
messages:  ## extract translatable text into crm/translations/messages.pot
	scripts/setup-venv && .venv/bin/pybabel extract -F babel.cfg -k _l -o crm/translations/messages.pot crm
