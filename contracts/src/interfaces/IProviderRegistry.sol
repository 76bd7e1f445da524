// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title IProviderRegistry
/// @notice What the JobMarket and the DisputeCourt need from the ProviderRegistry.
interface IProviderRegistry {
    /// @notice Whether `provider` may take jobs: registered, staked at least the minimum, not unstaking.
    function isActive(address provider) external view returns (bool);

    /// @notice Removes up to `amount` of `provider`'s stake and sends the reward share to the market;
    /// market only. Never reverts for a provider with nothing left to slash.
    /// @return slashed The stake actually removed.
    /// @return reward The part of it sent to the market, to be credited to whoever proved the fault.
    function slash(address provider, uint256 amount) external returns (uint256 slashed, uint256 reward);

    /// @notice Seconds between a provider's `requestUnstake` and `withdrawStake`.
    function unstakeCooldown() external view returns (uint256);

    /// @notice Smallest stake an active provider holds.
    function minStake() external view returns (uint256);

    /// @notice The DisputeCourt, or zero until the deployer names it.
    function court() external view returns (address);

    /// @notice Holds `provider`'s stake while a dispute it is a party or juror of is open; court only.
    function lockStake(address provider) external;

    /// @notice Releases one `lockStake`; court only.
    function unlockStake(address provider) external;

    /// @notice Sum of active providers' stakes.
    function totalWeight() external view returns (uint256);

    /// @notice The active provider covering `point` (below `totalWeight`), chosen in proportion to stake.
    function drawProvider(uint256 point) external view returns (address);
}
