"""Fixed, published protocols run as they were published.

- :mod:`mnas.experiments.transfer`: the course report's transfer runs of torchvision's
  ``mnasnet1_0`` on CIFAR-10 and Fashion-MNIST.

Must not know about: the search (controller, strategies, loop).
"""
