try:  # timm's Lars and Lamb where they import; the papers' formulas below otherwise
    from timm.optim import Lamb as TimmLamb, Lars as TimmLars
except Exception:  # not installed, or torchvision's operators do not load against this torch
    TimmLamb = TimmLars = None


class Formula(torch.optim.Optimizer):
    """A reference optimizer from a per-tensor rule(p, g, state, **group)."""

    def __init__(self, params, rule, **defaults):
        self.rule = rule
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.rule(p, p.grad, self.state[p], **group)


# the references for LARS, LAMB and BERTAdam: the lesson's rules (section 1), fed each group's lr and weight decay
lars_formula = lambda p, g, state, lr, weight_decay, **_: lars(p, g, state, lr, weight_decay)
lamb_formula = lambda p, g, state, lr, weight_decay, **_: lamb(p, g, state, lr, weight_decay)
bertadam_formula = lambda p, g, state, lr, weight_decay, **_: adamw(p, g, state, lr, weight_decay, bias_correction=False)


def parity_run(make_optimizer, lr, steps=6):
    """Parameters after `steps` identical pseudo-random steps: groups [weight, zero bias, tiny, unused] (decayed) and [other]."""
    gen = torch.Generator().manual_seed(0)
    f64 = dict(dtype=torch.float64)
    params = [torch.nn.Parameter(x) for x in (torch.randn(5, 4, generator=gen, **f64), torch.zeros(4, **f64),
                                               torch.randn(6, generator=gen, **f64), torch.randn(3, generator=gen, **f64),
                                               torch.randn(4, 3, generator=gen, **f64))]
    weight, bias, tiny, unused, other = params
    start = unused.detach().clone()
    opt = make_optimizer([{"params": [weight, bias, tiny, unused], "weight_decay": 0.1},
                          {"params": [other], "lr": lr / 3, "weight_decay": 0.0}], lr)
    for _ in range(steps):
        for p, scale in ((weight, 1.0), (bias, 1.0), (tiny, 1e-6), (other, 1.0)):
            p.grad = scale * (torch.sin(3 * p.detach()) + torch.randn(p.shape, generator=gen, **f64))
        opt.step()
    assert torch.equal(unused.detach(), start), "a parameter without a gradient moved"
    return [p.detach() for p in params]


timm_or_formula = "timm" if TimmLars is not None else "the paper's formula (timm not installed here)"
checks = {  # name: (ours, reference, what the reference is, lr)
    "SGD": (lambda g, lr: fo.SGD(g, lr=lr, momentum=0.9, nesterov=True),
            lambda g, lr: torch.optim.SGD(g, lr=lr, momentum=0.9, nesterov=True, foreach=False), "torch.optim", 0.1),
    "RMSprop": (lambda g, lr: fo.RMSprop(g, lr=lr, momentum=0.5, centered=True),
                lambda g, lr: torch.optim.RMSprop(g, lr=lr, momentum=0.5, centered=True, foreach=False), "torch.optim", 1e-2),
    "Adagrad": (lambda g, lr: fo.Adagrad(g, lr=lr, lr_decay=0.01),
                lambda g, lr: torch.optim.Adagrad(g, lr=lr, lr_decay=0.01, foreach=False), "torch.optim", 0.1),
    "Adam": (lambda g, lr: fo.Adam(g, lr=lr, amsgrad=True),
             lambda g, lr: torch.optim.Adam(g, lr=lr, amsgrad=True, foreach=False), "torch.optim", 1e-2),
    "AdamW": (lambda g, lr: fo.AdamW(g, lr=lr), lambda g, lr: torch.optim.AdamW(g, lr=lr, foreach=False), "torch.optim", 1e-2),
    "LARS": (lambda g, lr: fo.LARS(g, lr=lr, momentum=0.9),
             (lambda g, lr: TimmLars(g, lr=lr, momentum=0.9)) if TimmLars else (lambda g, lr: Formula(g, lars_formula, lr=lr)),
             timm_or_formula, 1.0),
    "LAMB": (lambda g, lr: fo.LAMB(g, lr=lr),
             (lambda g, lr: TimmLamb(g, lr=lr, max_grad_norm=None)) if TimmLamb else (lambda g, lr: Formula(g, lamb_formula, lr=lr)),
             timm_or_formula, 1e-2),
    "AdamW(bias_correction=False)": (lambda g, lr: fo.AdamW(g, lr=lr, bias_correction=False),
                                     lambda g, lr: Formula(g, bertadam_formula, lr=lr), "BERT's formula", 1e-2),
}
for name, (ours, reference, against, lr) in checks.items():
    for a, b in zip(parity_run(ours, lr), parity_run(reference, lr)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)  # tighter than float64's defaults
    print(f"  {name:<29} == {against}")
n_optimizers = len(fo.__all__)
print(f"{n_optimizers} optimizers (and BERTAdam) match torch.optim/{'timm' if TimmLars else 'the papers'} to float64 "
      "round-off (tests/test_optim.py has the full grid)")