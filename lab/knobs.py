def add_parser(sub):
    sub.add_parser("knob")


def run_knob(args):
    raise NotImplementedError
