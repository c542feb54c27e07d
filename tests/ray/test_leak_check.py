"""The placement-group check of the end-to-end tests can fail: a group left reserved
fails it on the Tune path and on the Ray Train path alike."""

import pytest
from helpers.tiny import check_placement_groups_released, live_placement_groups

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ray_train", [False, True], ids=["tune", "ray-train"])
def test_a_reserved_placement_group_fails_the_check(ray_session, ray_train):
    before = live_placement_groups()
    group = ray_session.util.placement_group([{"CPU": 1}])
    ray_session.get(group.ready(), timeout=120)
    try:
        with pytest.raises(AssertionError, match="still reserved"):
            check_placement_groups_released(ray_train=ray_train, before=before, timeout_s=2)
    finally:
        ray_session.util.remove_placement_group(group)
    check_placement_groups_released(ray_train=ray_train, before=before)  # released: passes
