from benchmarks.e2e.cli import main
from benchmarks.sglang_http import exit_on_sigterm

exit_on_sigterm()  # a killed sweep stops its SGLang servers and routers
raise SystemExit(main())
