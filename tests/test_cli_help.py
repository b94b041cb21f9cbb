import subprocess
import sys


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from glmops.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'run' in r.output and 'inventory' in r.output and 'tunnel' in r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'paramiko') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
