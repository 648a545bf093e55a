import torch


def sgd(p, g, s, lr, momentum=0.9):  # torch's convention: the first buffer is g itself
    s["b"] = g.clone() if "b" not in s else momentum * s["b"] + g
    p -= lr * s["b"]


def rmsprop(p, g, s, lr, alpha=0.99, eps=1e-8):  # v starts at 0, no bias correction
    s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
    p -= lr * g / (s["v"].sqrt() + eps)


def adagrad(p, g, s, lr, eps=1e-10):  # every squared gradient, summed: the step only shrinks
    s["s"] = s.get("s", 0) + g * g
    p -= lr * g / (s["s"].sqrt() + eps)


def adamw(p, g, s, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8, bias_correction=True):
    (b1, b2), t = betas, s.get("t", 0) + 1
    p *= 1 - lr * weight_decay  # decoupled decay (AdamW); BERTAdam: bias_correction=False
    s["t"], s["m"], s["v"] = t, b1 * s.get("m", 0) + (1 - b1) * g, b2 * s.get("v", 0) + (1 - b2) * g * g
    m, v = (s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)) if bias_correction else (s["m"], s["v"])
    p -= lr * m / (v.sqrt() + eps)


def lars(p, g, s, lr, weight_decay, momentum=0.9, trust_coefficient=1e-3, eps=1e-8):  # a trust ratio per tensor
    if weight_decay:  # as timm: only decayed tensors are adapted (biases and norms get plain SGD)
        w_norm, g_norm = p.norm(), g.norm()
        trust = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
        g = (g + weight_decay * p) * trust
    sgd(p, g, s, lr, momentum)


def lamb(p, g, s, lr, weight_decay, betas=(0.9, 0.999), eps=1e-6):  # Adam's direction, rescaled to ||p||
    (b1, b2), t = betas, s.get("t", 0) + 1
    s["t"], s["m"], s["v"] = t, b1 * s.get("m", 0) + (1 - b1) * g, b2 * s.get("v", 0) + (1 - b2) * g * g
    u = (s["m"] / (1 - b1**t)) / ((s["v"] / (1 - b2**t)).sqrt() + eps)
    if weight_decay:  # decayed tensors: the decay inside the update, then the trust ratio ||p|| / ||u||
        u = u + weight_decay * p
        u = u * (p.norm() / u.norm() if p.norm() > 0 and u.norm() > 0 else 1.0)
    p -= lr * u


def f(x):  # d2l's ill-conditioned bowl: 20x steeper along x2 than along x1
    return 0.1 * x[0] ** 2 + 2 * x[1] ** 2


def trajectory(step, steps=40, **hyper):
    x, state, path = torch.tensor([-5.0, -2.0], dtype=torch.float64), {}, []
    for _ in range(steps):
        path.append(x.clone())
        g = torch.tensor([0.2 * x[0], 4 * x[1]], dtype=torch.float64)  # the gradient of f
        step(x, g, state, **hyper)
    return torch.stack(path + [x.clone()])
