from __future__ import annotations

import pytest

from titans.cli import main


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["generate", "--help"],
                                  ["data", "prepare", "--help"], ["demo", "--help"], ["memorize", "--help"],
                                  ["forecast", "--help"], ["study", "lm", "--help"],
                                  ["study", "niah", "--help"], ["study", "mqar", "--help"],
                                  ["study", "mad", "--help"]])
def test_help_works(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_version_names_the_package_and_torch(capsys):
    import torch

    import titans

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"titans {titans.__version__} (torch {torch.__version__})"


PASSTHROUGH = [(["demo", "--help"], "--steps"), (["forecast", "--help"], "--horizon"),
               (["memorize", "--help"], "--theta"), (["study", "lm", "--help"], "--variants"),
               (["study", "niah", "--help"], "--long"), (["study", "mqar", "--help"], "--depths"),
               (["study", "mad", "--help"], "--tasks")]


@pytest.mark.parametrize("argv,option", PASSTHROUGH)
def test_passthrough_commands_show_their_own_options(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert option in capsys.readouterr().out


def test_unknown_option_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--ckpt", "x", "--bogus"])
    assert e.value.code == 2


@pytest.mark.parametrize("argv", [["eval", "--ckpt", "no-such-run", "--device", "gpu0"],
                                  ["generate", "--ckpt", "no-such-run", "--device", "gpu0"],
                                  ["eval", "niah", "--ckpt", "no-such-run", "--device", "gpu0"]])
def test_a_bad_device_fails_before_loading(argv, capsys):
    # The checkpoint does not exist either: the device error must come first (before any work).
    with pytest.raises(SystemExit) as e:
        main(argv)
    msg = str(e.value.code) + capsys.readouterr().err
    assert "--device='gpu0'" in msg and "not a device" in msg


def test_console_script_prints_input_errors_in_one_line(monkeypatch, capsys):
    import sys

    from titans.cli import run

    monkeypatch.setattr(sys, "argv", ["titans", "train", "--set", "model.variant='xyz'", "--out-dir", "unused"])
    assert run() == 2
    err = capsys.readouterr().err
    assert err.startswith("titans: error: variant='xyz': must be one of") and "Traceback" not in err
    monkeypatch.setenv("TITANS_TRACEBACK", "1")
    with pytest.raises(ValueError, match="variant='xyz'"):
        run()


@pytest.mark.parametrize("argv, says", [
    (["data", "prepare", "--corpus", "no-such-corpus"], "corpus='no-such-corpus': not a named corpus"),
    (["study", "mqar", "--depths", "2,x"], "--depths '2,x': expected comma-separated ints"),
    (["eval", "niah", "--ckpt", "no-such-run", "--depths", "0,1.5"], "--depths '0,1.5'"),
    (["eval", "mqar", "--ckpt", "no-such-run", "--pairs", "8,y"], "--pairs '8,y'"),
    (["study", "niah", "--long", "5q"], "--long: '5q' is not a length")])
def test_input_errors_name_the_flag_in_one_line(monkeypatch, capsys, argv, says):
    """Missing data (a FileNotFoundError) and bad comma lists end in one line naming what was wrong, before work."""
    import sys

    from titans.cli import run

    monkeypatch.setattr(sys, "argv", ["titans", *argv])
    try:
        code = run()
    except SystemExit as e:  # argparse's own error exit
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err


def test_memorize_runs(capsys):
    from titans.memorize import recall

    assert recall(16, 1, 4) == 1.0


def test_train_eval_generate_end_to_end(tmp_path, capsys):
    from .text_corpus import write_corpus

    corpus = write_corpus(str(tmp_path / "c"))
    run = str(tmp_path / "run")
    main(["train", "--preset", "tiny", "--out-dir", run, "--quiet", "--set", f"data.corpus={corpus!r}",
          "--set", f"data.data_dir={str(tmp_path / 'd')!r}", "--set", "train.max_steps=4"])
    main(["eval", "--ckpt", run, "--length", "128", "--piece", "64", "--max-windows", "2", "--device", "cpu",
          "--positions", "2"])
    main(["generate", "--ckpt", run, "--prompt", "the memory", "--max-new-tokens", "8", "--device", "auto"])
    out = capsys.readouterr().out
    assert '"bpb"' in out and '"device": "' in out and '"by_position"' in out and "the memory" in out


@pytest.mark.parametrize("flag,value", [("--temperature", "-1"), ("--top-k", "0"), ("--max-new-tokens", "-3")])
def test_bad_sampling_options_fail_before_loading(flag, value):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--ckpt", "no-such-run", flag, value])
    assert f"{flag}={float(value) if flag == '--temperature' else int(value)}" in str(e.value.code)
