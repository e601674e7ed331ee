"""The lab tests' reading of pyinfra's results table (tests/lab/deploy_run.py)."""

from deploy_run import DeployRun

TABLE = """--> Results:
    Operation                      Hosts   Success   Error   No Change
    Base | sources                 1       1         -       -

    Base | packages                1       -         -       1
    TLS front door | nginx -t      1       1         -       -
    Grand total                    3       2         -       1

--> Disconnecting from hosts...
"""


def test_the_changed_operations_are_read_across_vagrants_empty_lines():
    """Vagrant prints a trigger's output in chunks, with empty lines between them: a row after
    one still counts (the Vagrant run's first deploy once read as no change at all)."""
    run = DeployRun(0, TABLE, 1.0)
    assert run.changed_operations() == ["Base | sources", "TLS front door | nginx -t"]
