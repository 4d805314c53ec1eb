"""Option declarations: command-line strings become the declared type, values outside the choices or
range are errors that name the option, special values pass, later layers win, and the description
lists every option with its type, default, allowed values and help."""
import pytest

from lwbench.options import TO_BUDGET, ConfigError, Option, defaults, describe_options, resolve
from lwbench.registry import get_method


class Example:
    name = "example"
    options = {
        "dim": Option(128, min=1, help="embedding dimension"),
        "rows": Option(0, min=1, special=TO_BUDGET),
        "mode": Option("vq", choices=("vq", "sx")),
        "rate": Option(0.5, min=0, below=1),
        "lr": Option(1e-3, above=0),
        "tiers": Option(True),
        "ks": Option([5, 10]),
        "init_std": 0.1,
    }


def test_command_line_strings_become_the_declared_types():
    resolved = resolve(Example, {"dim": "64", "rows": "12", "mode": "sx", "rate": "0", "lr": "1",
                                 "tiers": "false", "ks": "1,2", "init_std": "0.3"})
    assert resolved == {"dim": 64, "rows": 12, "mode": "sx", "rate": 0.0, "lr": 1.0, "tiers": False,
                        "ks": (1, 2), "init_std": 0.3}
    assert isinstance(resolved["rate"], float) and isinstance(resolved["dim"], int)


def test_later_layers_win_and_defaults_fill_the_rest():
    resolved = resolve(Example, {"dim": 64, "mode": "sx"}, {"dim": "32"})
    assert resolved == {**defaults(Example), "dim": 32, "mode": "sx"}
    assert defaults(Example)["ks"] == (5, 10)   # a list default is a tuple option


@pytest.mark.parametrize("changes, message", [
    ({"mode": "xx"}, "example.mode must be one of vq, sx, got 'xx'"),
    ({"dim": "0"}, "example.dim must be at least 1, got 0"),
    ({"rows": -1}, "example.rows must be at least 1 (or 0: sized to the budget), got -1"),
    ({"rate": 1}, "example.rate must be at least 0 and less than 1, got 1.0"),
    ({"lr": 0}, "example.lr must be greater than 0, got 0.0"),
    ({"dim": 2.5}, "example.dim expects an integer, got 2.5"),
    ({"tiers": "sometimes"}, "example.tiers expects true or false, got 'sometimes'"),
    ({"mode": 3}, "example.mode expects a string, got 3"),
    ({"width": 3}, "example has no option 'width'; its options are: dim, init_std, ks, lr, mode, rate, rows, tiers"),
])
def test_errors_name_the_option_and_what_it_accepts(changes, message):
    with pytest.raises(ConfigError) as caught:
        resolve(Example, changes)
    assert str(caught.value) == message


def test_special_values_pass_outside_the_range():
    assert resolve(Example, {"rows": 0})["rows"] == 0
    assert resolve(get_method("c2f"), {"coarse_seed": "-1"})["coarse_seed"] == -1


def test_a_default_of_an_unsupported_type_is_refused_at_declaration():
    with pytest.raises(TypeError, match="default sets its type"):
        Option(None)


def test_description_lists_type_default_allowed_values_and_help():
    assert describe_options(Example).splitlines() == [
        "dim (int, default 128, at least 1): embedding dimension",
        "rows (int, default 0, at least 1, or 0: sized to the budget)",
        "mode (str, default 'vq', one of vq, sx)",
        "rate (float, default 0.5, at least 0 and less than 1)",
        "lr (float, default 0.001, greater than 0)",
        "tiers (bool, default True)",
        "ks (tuple, default (5, 10))",
        "init_std (float, default 0.1)",
    ]


def test_method_errors_use_the_registered_name():
    with pytest.raises(ConfigError, match="mgqe.mode must be one of vq, sx, got 'xx'"):
        resolve(get_method("mgqe"), {"mode": "xx"})
    with pytest.raises(ConfigError, match="dpq.mode must be one of vq, sx"):
        resolve(get_method("dpq"), {"mode": "xx"})
    with pytest.raises(ConfigError, match="ud.dim must be at least 1, got 0"):
        resolve(get_method("ud"), {"dim": 0})
