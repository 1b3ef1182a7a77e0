"""Second-order fitting: the Levenberg-Marquardt solver, laid out as Ceres lays out its
solver.

- :mod:`.problem`: a stage's per-sample least-squares problem (parameters, residual
  blocks from the handlers, linearisation); :mod:`.group_problem`: the same over
  per-frame and shared (per-group) parameters.
- :mod:`.point_jacobian` (closed-form Jacobians of the body model's points, on
  :mod:`.kinematic_terms`), :mod:`.sparse_jacobian` (their block-sparse form) and
  :mod:`.residual_blocks` (the handlers' residuals and their Jacobians).
- :mod:`.normal_equations`: ``J^T J`` and ``J^T r`` in the layout the linear solver wants.
- :mod:`.linear_solver`: damped dense, split and sparse Cholesky, and the Schur
  complement, behind one interface.
- :mod:`.trust_region`: damping, Nielsen's update, acceptance and the stopping tests.
- :mod:`.loop`: the one Levenberg-Marquardt loop, over a system of independent units:
  :mod:`.sample_system` (every sample alone) or :mod:`.group_system` (every group).
"""
from .group_problem import GroupLeastSquaresProblem
from .group_system import GroupSystem
from .linear_solver import LinearSolver, plan_linear_solver
from .loop import levenberg_marquardt
from .options import LM_NAMES, LMOptions
from .point_jacobian import JACOBIAN_PARAMS, PointJacobian, UnsupportedJacobian
from .problem import LeastSquaresProblem
from .sample_system import SampleSystem
from .trust_region import DAMPING, TrustRegion

__all__ = ['LM_NAMES', 'LMOptions', 'LeastSquaresProblem', 'GroupLeastSquaresProblem',
           'SampleSystem', 'GroupSystem', 'levenberg_marquardt', 'LinearSolver',
           'plan_linear_solver', 'TrustRegion', 'DAMPING', 'PointJacobian',
           'UnsupportedJacobian', 'JACOBIAN_PARAMS']
