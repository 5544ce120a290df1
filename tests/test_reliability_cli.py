"""Each bad input gets one line on stderr naming what is wrong, and a documented exit code (2)."""

import socket

import pytest
from click.testing import CliRunner

from medsagan.cli import main


def one_line_error(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.mark.parametrize("vmax", ["-1", "nan", "0", "inf"])
def test_predict_refuses_a_colour_scale_that_is_not_a_positive_number(tmp_path, vmax):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    code, lines = one_line_error("predict", tmp_path, image, "--out", tmp_path / "out", "--vmax", vmax)
    assert code == 2 and len(lines) == 1 and "--vmax" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_refuses_a_port_out_of_range(tmp_path, port):
    code, lines = one_line_error("serve", tmp_path, "--port", port)
    assert code == 2 and len(lines) == 1 and "--port" in lines[0]


def test_a_port_in_use_is_one_line_before_anything_is_served():
    from medsagan.errors import DataError
    from medsagan.serve import check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DataError, match=rf"cannot serve on 127\.0\.0\.1:{port}.*choose another --port"):
            check_port_free("127.0.0.1", port)


def test_import_official_refuses_a_data_path_that_does_not_exist(tmp_path):
    checkpoint = tmp_path / "G.ckpt"
    checkpoint.write_bytes(b"x")
    code, lines = one_line_error("import-official", checkpoint, "--out", tmp_path / "run", "--data", tmp_path / "nope")
    assert code == 2 and len(lines) == 1 and "nope does not exist" in lines[0]
    assert not (tmp_path / "run").exists()


def test_data_check_with_the_synthetic_source_refuses_a_path_it_would_ignore(tmp_path):
    code, lines = one_line_error("data", "check", "--source", "synthetic", tmp_path)
    assert code == 2 and len(lines) == 1 and "would be ignored" in lines[0]
