"""The benchmark suite (`make bench`, or `python -m bench.run_all`): each module measures its figures
beside their baselines in one run and writes them with bench.result; bench.summary turns the results
into one table's rows and bench.suite_table renders them. Run one as `python -m bench.<name> --help`."""
