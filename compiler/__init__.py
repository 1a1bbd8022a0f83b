"""stapes: small recurrent networks -> compressed, bit-exact fixed-point C for low-power audio devices."""

__version__ = "0.1.0"
